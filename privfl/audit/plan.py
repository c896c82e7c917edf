"""An audited run: canaries planted before training, scored from what the run released.

:class:`AuditPlan` prepares the data (held-out clients, canary clients or canary examples) and
the client update, watches every round's global model, and after the run computes three numbers
for the run's privacy unit, each beside the accountant's ε for that unit:

* client-level units — Andrew et al.'s one-shot **estimate** from canary-client cosines, for the
  final model and for all iterates (:mod:`privfl.audit.estimate`);
* both units — Steinke, Nasr and Jagielski's one-run **lower bound** from the same canaries'
  scores (:mod:`privfl.audit.one_run`): cosines for canary clients (final model, and the
  maximum over rounds for all iterates), −loss for canary examples (final model);
* both units — a loss-threshold membership-inference attack on the final model
  (:mod:`privfl.audit.membership`): AUC, TPR at 1% FPR and a **heuristic** Clopper–Pearson bound.
  Example level: training examples against the server's test set. Client level: each client's
  mean loss, training clients against clients held out of the federation.

The raw scores (cosines, losses, inclusion bits) are kept in :class:`AuditResult` so every
number can be recomputed offline.

Threat model of the audit itself: the auditor controls the canaries (it plays the canary
clients, or it planted the canary records) and reads only released outputs — the global
models — never a client's update or the server's internal state.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from privfl._json import dumps
from privfl.accounting.report import AuditFinding, FindingKind, PrivacyReport
from privfl.audit.canaries import CLIPPED_SCALE, CanaryClients, CanaryClientUpdate, CanaryExamples
from privfl.audit.estimate import CanaryEstimate, ThreatModel, canary_estimate
from privfl.audit.membership import MembershipResult, loss_threshold_attack
from privfl.audit.one_run import OneRunBound, one_run_audit
from privfl.audit.units import AuditUnit
from privfl.data.dataset import ArrayDataset, FederatedDataset
from privfl.errors import ConfigurationError

__all__ = [
    "ANDREW",
    "AuditPlan",
    "AuditResult",
    "STEINKE",
    "YEOM",
    "estimate_finding",
    "example_membership_losses",
    "membership_finding",
    "one_run_finding",
    "per_example_losses",
    "score_example_canaries",
]

DEFAULT_CANARIES = {AuditUnit.EXAMPLE: 256, AuditUnit.CLIENT: 128}
_MIN_HOLDOUT = 20
_MAX_SCORED = 2000
ANDREW = "one-shot canary estimate (Andrew et al. 2024)"
STEINKE = "one-run audit (Steinke, Nasr, Jagielski 2023)"
YEOM = "loss-threshold membership inference (Yeom et al. 2018)"


def per_example_losses(model: Any, data: ArrayDataset) -> npt.NDArray[np.float64]:
    """Cross-entropy of every record of ``data`` under ``model``."""
    import torch
    from torch import nn

    model.eval()
    out = []
    with torch.no_grad():
        for a in range(0, len(data), 4096):
            x = torch.from_numpy(data.x[a:a + 4096])
            y = torch.from_numpy(data.y[a:a + 4096])
            out.append(nn.functional.cross_entropy(model(x), y, reduction="none").double())
    return torch.cat(out).numpy()


def score_example_canaries(model: Any, canaries: CanaryExamples, base: FederatedDataset
                           ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Each canary record's score −loss under ``model`` (higher: more likely planted)."""
    return -per_example_losses(model, canaries.records(base)), canaries.included


def example_membership_losses(model: Any, base: FederatedDataset, seed: int
                              ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Losses of n random training records and n random test records (n ≤ 2000, equal)."""
    pool = ArrayDataset(np.concatenate([c.x for c in base.clients]),
                        np.concatenate([c.y for c in base.clients]))
    rng = np.random.default_rng([seed, 6])
    n = min(len(pool), len(base.test), _MAX_SCORED)
    members = per_example_losses(model, pool.subset(rng.choice(len(pool), n, replace=False)))
    test = base.test
    non = per_example_losses(model, test.subset(rng.choice(len(test), n, replace=False)))
    return members, non


@dataclass
class AuditResult:
    """Everything an audit measured, raw scores included (``audit.json``)."""

    unit: str
    findings: list[AuditFinding]
    canary_scores: list[float]
    canary_included: list[bool]
    all_iterates_scores: list[float] = field(default_factory=list)
    member_losses: list[float] = field(default_factory=list)
    non_member_losses: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def finding(self, method_prefix: str, threat_model: str | None = None) -> AuditFinding:
        """The finding whose method starts with ``method_prefix`` (and threat model)."""
        for f in self.findings:
            if f.method.startswith(method_prefix) and threat_model in (None, f.threat_model):
                return f
        raise KeyError(method_prefix)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (∞ as the string "inf")."""
        raw = asdict(self)
        raw["findings"] = [f.to_dict() for f in self.findings]
        return raw

    def save(self, path: str | Path) -> None:
        """Write ``audit.json``."""
        Path(path).write_text(dumps(self.to_dict(), indent=1))


class AuditPlan:
    """Plants canaries in a run of ``cfg`` and measures them afterwards.

    Args:
        cfg: The run (:class:`~privfl.experiment.RunConfig`), with ``audit = true``.
        build_data: Builds the run's data with a given number of clients.
        build_model: Builds the run's model for a data set.

    Raises:
        ConfigurationError: A unit that the run's DP mode does not cover (example canaries
            under client-level DP, canary clients under local DP-SGD).
    """

    def __init__(self, cfg: Any, build_data: Callable[..., FederatedDataset],
                 build_model: Callable[[Any, FederatedDataset], Any]) -> None:
        from privfl.core.params import ParamSpec
        from privfl.experiment import DPMode

        self.cfg = cfg
        self.unit = self._resolve_unit(cfg)
        self.delta = cfg.delta
        self.beta = 1.0 - cfg.audit_confidence
        seed = cfg.seed
        count = cfg.canaries or DEFAULT_CANARIES[self.unit]
        self.notes: list[str] = []
        self.held_out: tuple[ArrayDataset, ...] = ()
        if self.unit is AuditUnit.CLIENT:
            holdout = cfg.holdout_clients or max(_MIN_HOLDOUT, cfg.clients // 10)
            full = build_data(cfg, clients=cfg.clients + holdout)
            base = FederatedDataset(full.clients[:cfg.clients], full.test, full.num_classes,
                                    full.name)
            self.held_out = full.clients[cfg.clients:]
            self.model = build_model(cfg, base)
            self.spec = ParamSpec.from_module(self.model)
            clipped = cfg.client_level_dp
            self.client_canaries: CanaryClients | None = CanaryClients(
                count=count, dim=self.spec.dim, seed=seed,
                scale=CLIPPED_SCALE if clipped else cfg.canary_norm)
            self.example_canaries: CanaryExamples | None = None
            self.data = self.client_canaries.add_to(base)
            self.first_canary = cfg.clients
            self.notes.append(
                f"{len(self.client_canaries.inserted)} of {count} canary clients joined the "
                f"{cfg.clients} real clients (each with probability 1/2); {holdout} clients "
                "were held out of the federation as non-members for the membership attack.")
            if cfg.dp is DPMode.ADAPTIVE:
                self.notes.append(
                    "Adaptive clipping: canaries always exceed the clip, so their clip bits "
                    "(0) push the quantile estimate, and with it C, upwards; this is part of "
                    "the audited mechanism.")
            if not clipped:
                self.notes.append(f"Without client-level DP nothing clips updates: canary "
                                  f"clients sent updates of norm {cfg.canary_norm:g}.")
        else:
            base = build_data(cfg)
            self.model = build_model(cfg, base)
            self.spec = ParamSpec.from_module(self.model)
            self.client_canaries = None
            self.example_canaries = CanaryExamples(count=count, seed=seed)
            self.data = self.example_canaries.add_to(base)
            self.first_canary = -1
            self.notes.append(
                f"{int(self.example_canaries.included.sum())} of {count} canary records "
                "(features drawn from the training marginals, uniform labels) were planted in "
                "random clients' training sets, each with probability 1/2.")
        self._base = base
        self._previous: npt.NDArray[np.float32] | None = None
        self._initial: npt.NDArray[np.float32] | None = None
        self._max_cos: npt.NDArray[np.float64] | None = None

    @staticmethod
    def _resolve_unit(cfg: Any) -> AuditUnit:
        from privfl.experiment import DPMode

        unit = cfg.audit_unit
        if unit is AuditUnit.AUTO:
            return AuditUnit.CLIENT if cfg.client_level_dp else AuditUnit.EXAMPLE
        if unit is AuditUnit.EXAMPLE and cfg.client_level_dp:
            raise ConfigurationError(
                "example canaries under client-level DP would be compared with a client-level "
                "ε whose neighbouring relation (add or remove one client) does not describe "
                "adding one example. Tip: `--audit-unit client`.")
        if unit is AuditUnit.CLIENT and cfg.dp is DPMode.LOCAL:
            raise ConfigurationError(
                "local DP-SGD protects examples, not clients: canary clients would be compared "
                "with an ε that does not cover them. Tip: `--audit-unit example`.")
        return AuditUnit(unit)

    # --- during the run ---------------------------------------------------------------------
    def wrap(self, update: Any) -> Any:
        """The client update with canary clients (unchanged for example canaries)."""
        if self.client_canaries is None:
            return update
        return CanaryClientUpdate(inner=update, canaries=self.client_canaries,
                                  first_id=self.first_canary)

    def start(self, params: npt.NDArray[np.float32]) -> None:
        """Remember θ₀ (before the first round)."""
        self._initial = np.array(params, copy=True)
        self._previous = self._initial.copy()

    def observe(self, params: npt.NDArray[np.float32]) -> None:
        """One round's released global model θₜ (for the all-iterates statistic)."""
        if self.client_canaries is None or self._previous is None:
            return
        cos = self.client_canaries.cosines(params.astype(np.float64) - self._previous)
        self._max_cos = cos if self._max_cos is None else np.maximum(self._max_cos, cos)
        self._previous = np.array(params, copy=True)

    def state_dict(self) -> dict[str, Any]:
        """θ₀, the last observed θ and the running all-iterates statistic (for a checkpoint)."""
        return {"initial": self._initial, "previous": self._previous, "max_cos": self._max_cos}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the canaries themselves are rebuilt from the seed)."""
        from privfl.core.checkpoint import require_array

        def opt(key: str, shape: tuple[int, ...], dtype: Any) -> Any:
            return None if state.get(key) is None else require_array(state, key, shape, dtype)

        d = (self.spec.dim,)
        n = (self.client_canaries.count,) if self.client_canaries is not None else None
        self._initial = opt("initial", d, np.float32)
        self._previous = opt("previous", d, np.float32)
        self._max_cos = None if n is None else opt("max_cos", n, np.float64)

    # --- after the run ------------------------------------------------------------------------
    def finish(self, params: npt.NDArray[np.float32], report: PrivacyReport) -> AuditResult:
        """Score the canaries and run the attacks on the final model ``params``."""
        from privfl.accounting.ledger import UnitKind

        if self._initial is None:
            raise ConfigurationError("AuditPlan.start was not called before the run.")
        kind = UnitKind.CLIENT if self.unit is AuditUnit.CLIENT else UnitKind.EXAMPLE
        worst = report.worst(kind)
        eps = math.inf if worst is None or worst.epsilon is None else float(worst.epsilon)
        self.spec.load_into(self.model, params)
        findings: list[AuditFinding] = []
        res = AuditResult(unit=self.unit.value, findings=findings, canary_scores=[],
                          canary_included=[], notes=list(self.notes))
        cc, ec = self.client_canaries, self.example_canaries
        if cc is not None:
            scores = cc.cosines(params.astype(np.float64) - self._initial)
            inc = cc.included
            for tm, stat in ((ThreatModel.FINAL_MODEL, scores),
                             (ThreatModel.ALL_ITERATES, self._max_cos)):
                if stat is not None and inc.sum() >= 2 and (~inc).sum() >= 2:
                    est = canary_estimate(stat[inc], stat[~inc], dim=cc.dim, delta=self.delta,
                                          threat_model=tm)
                    findings.append(estimate_finding(est, self.unit, self.delta, eps))
            if self._max_cos is not None:
                res.all_iterates_scores = self._max_cos.tolist()
            members = np.array([per_example_losses(self.model, c).mean()
                                for c in self._base.clients])
            non_members = np.array([per_example_losses(self.model, c).mean()
                                    for c in self.held_out])
        elif ec is not None:
            scores, inc = score_example_canaries(self.model, ec, self._base)
            members, non_members = example_membership_losses(self.model, self._base,
                                                             self.cfg.seed)
        else:  # pragma: no cover - the constructor sets one of the two
            raise ConfigurationError("no canaries were planted")
        res.canary_scores, res.canary_included = scores.tolist(), inc.tolist()
        bound = one_run_audit(scores, inc, delta=self.delta, beta=self.beta)
        findings.append(one_run_finding(bound, self.unit, self.delta, eps))
        if cc is not None and self._max_cos is not None:
            every = one_run_audit(self._max_cos, inc, delta=self.delta, beta=self.beta)
            findings.append(one_run_finding(every, self.unit, self.delta, eps,
                                            ThreatModel.ALL_ITERATES))
        if len(members) >= _MIN_HOLDOUT and len(non_members) >= _MIN_HOLDOUT:
            mia = loss_threshold_attack(members, non_members, delta=self.delta, beta=self.beta)
            findings.append(membership_finding(mia, self.unit, self.delta, eps))
            res.member_losses, res.non_member_losses = members.tolist(), non_members.tolist()
        else:
            res.notes.append(f"No membership attack: it needs >= {_MIN_HOLDOUT} members and "
                             f"non-members; found {len(members)} and {len(non_members)}.")
        return res


def _finding(method: str, kind: FindingKind, value: float, unit: AuditUnit, delta: float,
             eps: float, threat: ThreatModel, details: dict[str, Any],
             confidence: float | None) -> AuditFinding:
    return AuditFinding(unit_kind=unit.value, method=method, kind=kind, value=float(value),
                        confidence=confidence, delta=delta, threat_model=threat.value,
                        accountant_epsilon=eps, details=details)


def estimate_finding(est: CanaryEstimate, unit: AuditUnit, delta: float,
                     eps: float) -> AuditFinding:
    """Andrew et al.'s estimate as a report finding (kind: estimate)."""
    return _finding(
        ANDREW, FindingKind.ESTIMATE, est.epsilon_estimate, unit, delta, eps, est.threat_model,
        {"epsilon_gdp": est.epsilon_gdp, "mean_z": est.mean_z, "std_z": est.std_z,
         "null_mean_z": est.null_mean_z, "null_std_z": est.null_std_z,
         "inserted": est.inserted, "held_out": est.held_out, "dim": est.dim}, None)


def one_run_finding(b: OneRunBound, unit: AuditUnit, delta: float, eps: float,
                    threat: ThreatModel = ThreatModel.FINAL_MODEL) -> AuditFinding:
    """Steinke et al.'s bound as a report finding (kind: lower bound)."""
    return _finding(
        STEINKE, FindingKind.LOWER_BOUND, b.epsilon_lower, unit, delta, eps, threat,
        {"epsilon_lower_pure": b.epsilon_lower_pure, "canaries": b.canaries,
         "guesses": b.guesses, "correct": b.correct, "k_plus": b.k_plus, "k_minus": b.k_minus,
         "guess_sets": b.tested, "canary_auc": b.score_auc}, b.confidence)


def membership_finding(m: MembershipResult, unit: AuditUnit, delta: float,
                       eps: float) -> AuditFinding:
    """The loss-threshold attack as a report finding (kind: heuristic bound)."""
    return _finding(
        YEOM, FindingKind.HEURISTIC_BOUND, m.epsilon_lower, unit, delta, eps,
        ThreatModel.FINAL_MODEL,
        {"auc": m.auc, "tpr_at_1pct_fpr": m.tpr_at_1pct_fpr, "advantage": m.advantage,
         "members": m.members, "non_members": m.non_members}, m.confidence)
