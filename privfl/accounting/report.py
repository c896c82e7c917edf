"""PrivacyReport: what a run guarantees, per privacy unit, and under which trust assumptions.

A report states for each unit ε at δ from the certifying accountant (PLD by default) with RDP
alongside, the neighbouring relation, the mechanisms with their parameters, how often the unit
was charged, and ε after each round. It also carries the trust assumptions that the
confidentiality layer (the secure sum) declares, because DP says nothing about who sees the
individual updates. It serialises to JSON (round-trippable), Markdown and a PNG plot.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from privfl._json import dumps, finite
from privfl.accounting.accountant import PLD_INTERVAL, Accountant
from privfl.accounting.calibrate import COARSE_PLD_INTERVAL
from privfl.accounting.ledger import PrivacyLedger, PrivacyUnit, UnitKind
from privfl.errors import UnsupportedEventError

__all__ = ["AuditFinding", "FindingKind", "PrivacyReport", "Scope", "UnitReport"]

_MAX_PLD_POINTS = 8


def _unclean(x: Any) -> Any:
    """Inverse of :func:`privfl._json.finite` for numbers."""
    if x == "inf":
        return math.inf
    if x == "-inf":
        return -math.inf
    if isinstance(x, list):
        return [_unclean(v) for v in x]
    if isinstance(x, dict):
        return {k: _unclean(v) for k, v in x.items()}
    return x


def _fmt(x: float | None) -> str:
    if x is None:
        return "n/a"
    return "∞" if math.isinf(x) else f"{x:.4g}"


@dataclass(frozen=True, kw_only=True)
class UnitReport:
    """The guarantee for one privacy unit."""

    unit: str
    kind: str
    client: int | None
    neighboring_relation: str
    delta: float
    epsilon: float | None
    accountant: str
    epsilon_pld: float | None
    epsilon_rdp: float | None
    budget_epsilon: float | None
    rounds_charged: int
    mechanisms: list[dict[str, Any]]
    epsilon_by_round: list[list[float | None]]
    """Rows ``[round, ε_RDP, ε_PLD or None]``: PLD at up to 8 evenly spaced rounds, with the
    coarser 1e-3 discretisation (a slightly larger upper bound; the unit's final ``epsilon`` is
    certified at 1e-4)."""


@dataclass(frozen=True, kw_only=True)
class Scope:
    """Exactly what one kind of unit's ε is about, and what it takes for granted.

    Attributes:
        unit_kind: ``"example"`` or ``"client"``.
        mechanism: The mechanism whose guarantee this is.
        covers: The outputs the ε bounds (and, by post-processing, anything computed from them).
        withheld: Outputs the run did not release because no ledger accounts for them.
        assumed_public: What the analysis treats as known to the adversary.
        not_covered: Side channels and parties the guarantee says nothing about.
        randomness: Where the mechanism's random draws came from.
        guarantee_holds: ``False`` when the draws came from a seeded simulation generator:
            anyone who knows the seed can replay them, so no guarantee is claimed.
    """

    unit_kind: str
    mechanism: str
    covers: list[str]
    withheld: list[str]
    assumed_public: list[str]
    not_covered: list[str]
    randomness: str
    guarantee_holds: bool

    def markdown(self) -> list[str]:
        """Bullet lines for the report."""
        out = [f"**What this ε covers** ({self.mechanism}):", ""]
        out += [f"- covers: {c}" for c in self.covers]
        out += [f"- withheld from the run directory: {w}" for w in self.withheld]
        out += [f"- assumed public: {a}" for a in self.assumed_public]
        out += [f"- not covered: {n}" for n in self.not_covered]
        out += [f"- randomness: {self.randomness}", ""]
        return out


class FindingKind(enum.Enum):
    """What an empirical privacy number is, statistically."""

    ESTIMATE = "estimate"
    """A point estimate (Andrew et al.): it may land above the true ε; not a bound."""
    LOWER_BOUND = "lower bound"
    """A lower bound at the stated confidence: above the accountant's ε means a bug."""
    HEURISTIC_BOUND = "heuristic lower bound"
    """A bound whose independence assumption the run does not meet (membership inference on
    records whose membership was not randomised)."""


@dataclass(frozen=True, kw_only=True)
class AuditFinding:
    """One empirical privacy number, beside the accountant's ε for the same unit.

    Attributes:
        unit_kind: ``"example"`` or ``"client"``: what the audit's records were.
        method: The attack or estimator, with its reference.
        kind: Estimate, lower bound or heuristic bound.
        value: The ε it gives (at ``delta``).
        confidence: 1 − β for bounds, ``None`` for estimates.
        delta: The ledger's δ.
        threat_model: Which outputs the statistic read (final model, all iterates).
        accountant_epsilon: The accountant's ε for the same unit (the worst client for
            example-level units); ``inf`` without DP.
        details: Method-specific figures (AUC, canary counts, z-scores, guesses, …).
    """

    unit_kind: str
    method: str
    kind: FindingKind
    value: float
    confidence: float | None
    delta: float
    threat_model: str
    accountant_epsilon: float
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict."""
        out: dict[str, Any] = finite(asdict(self))
        return out

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> AuditFinding:
        """Inverse of :meth:`to_dict`."""
        values = {k: _unclean(v) for k, v in raw.items()}
        return cls(**{**values, "kind": FindingKind(raw["kind"])})

    @property
    def is_bound(self) -> bool:
        """Whether the number claims to be a lower bound (heuristic or not)."""
        return self.kind is not FindingKind.ESTIMATE

    def markdown_row(self) -> str:
        """One row of the report's audit table."""
        conf = "—" if self.confidence is None else f"{self.confidence:.0%}"
        detail = ", ".join(f"{k} {_fmt(v) if isinstance(v, float) else v}"
                           for k, v in self.details.items() if not isinstance(v, (list, dict)))
        return (f"| {self.method} | {self.kind.value} | {_fmt(self.value)} | {conf} | "
                f"{_fmt(self.accountant_epsilon)} | {self.threat_model} | {detail} |")


@dataclass(frozen=True, kw_only=True)
class PrivacyReport:
    """Everything a run can claim about privacy."""

    delta: float | None
    """δ of the ε values; ``None`` when no DP mechanism ran."""
    accountant: str
    units: list[UnitReport]
    trust_assumptions: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    scopes: list[Scope] = field(default_factory=list)
    audits: list[AuditFinding] = field(default_factory=list)
    """Empirical privacy numbers of the same run (``privfl audit``), each beside the
    accountant's ε."""

    # --- construction -----------------------------------------------------------------------
    @classmethod
    def from_ledger(cls, ledger: PrivacyLedger, *,
                    trust_assumptions: Sequence[Mapping[str, str]] = (),
                    notes: Sequence[str] = (), scopes: Sequence[Scope] = ()) -> PrivacyReport:
        """Summarise ``ledger`` (computes ε per unit and per round)."""
        units = [cls._unit(ledger, u) for u in ledger.units]
        return cls(delta=ledger.delta, accountant=ledger.accountant.name, units=units,
                   trust_assumptions=[dict(t) for t in trust_assumptions], notes=list(notes),
                   scopes=list(scopes))

    @staticmethod
    def _safe(ledger: PrivacyLedger, unit: PrivacyUnit, acc: Accountant,
              up_to: int | None = None, pld_interval: float = PLD_INTERVAL) -> float | None:
        try:
            return ledger.epsilon(unit, accountant=acc, up_to_round=up_to,
                                  pld_interval=pld_interval)
        except UnsupportedEventError:
            return None

    @classmethod
    def _unit(cls, ledger: PrivacyLedger, unit: PrivacyUnit) -> UnitReport:
        rounds = ledger.rounds(unit)
        pld_rounds = set(rounds[:: max(1, math.ceil(len(rounds) / _MAX_PLD_POINTS))] + rounds[-1:])
        history: list[list[float | None]] = []
        for r in rounds:
            rdp = cls._safe(ledger, unit, Accountant.RDP, r)
            pld = (cls._safe(ledger, unit, Accountant.PLD, r, COARSE_PLD_INTERVAL)
                   if r in pld_rounds else None)
            history.append([float(r), rdp, pld])
        mechanisms: dict[tuple[str, str], dict[str, Any]] = {}
        for e in ledger.entries(unit):
            key = (e.mechanism, json.dumps(dict(e.params), sort_keys=True, default=str))
            m = mechanisms.setdefault(key, {"mechanism": e.mechanism, **dict(e.params),
                                            "times": 0, "dp_event": repr(e.event)})
            m["times"] += 1
        budget = ledger.budgets.get(unit.kind)
        eps_pld = cls._safe(ledger, unit, Accountant.PLD)
        eps_rdp = cls._safe(ledger, unit, Accountant.RDP)
        primary = eps_pld if ledger.accountant is Accountant.PLD else eps_rdp
        return UnitReport(
            unit=unit.key, kind=unit.kind.value, client=unit.client,
            neighboring_relation=unit.relation.value, delta=ledger.delta,
            epsilon=primary, accountant=ledger.accountant.name,
            epsilon_pld=eps_pld, epsilon_rdp=eps_rdp,
            budget_epsilon=budget.epsilon if budget else None, rounds_charged=len(rounds),
            mechanisms=list(mechanisms.values()), epsilon_by_round=history)

    # --- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible dict (∞ becomes the string "inf")."""
        out: dict[str, Any] = finite(asdict(self))
        return out

    def with_audits(self, findings: Sequence[AuditFinding]) -> PrivacyReport:
        """This report with ``findings`` added to its audits."""
        return dataclasses.replace(self, audits=[*self.audits, *findings])

    def to_json(self) -> str:
        """Indented JSON with no NaN or Infinity tokens (a missing δ is ``null``)."""
        return dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PrivacyReport:
        """Inverse of :meth:`to_dict`."""
        audits = [AuditFinding.from_dict(a) for a in raw.get("audits", [])]
        units = [UnitReport(**{k: _unclean(v) for k, v in u.items()}) for u in raw["units"]]
        return cls(delta=raw["delta"], accountant=raw["accountant"], units=units,
                   trust_assumptions=list(raw.get("trust_assumptions", [])),
                   notes=list(raw.get("notes", [])),
                   scopes=[Scope(**sc) for sc in raw.get("scopes", [])], audits=audits)

    @classmethod
    def load(cls, path: str | Path) -> PrivacyReport:
        """Read a ``privacy_report.json``."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    def worst(self, kind: UnitKind) -> UnitReport | None:
        """The unit of ``kind`` with the largest ε (None if there is none)."""
        units = [u for u in self.units if u.kind == kind.value]
        return max(units, key=lambda u: -1.0 if u.epsilon is None else u.epsilon, default=None)

    def worst_example(self) -> UnitReport | None:
        """The example-level unit with the largest ε."""
        return self.worst(UnitKind.EXAMPLE)

    def to_markdown(self) -> str:
        """A human-readable report."""
        lines = ["# Privacy report", ""]
        other = "RDP" if self.accountant == "PLD" else "PLD (where it applies)"
        if self.delta is not None:
            lines += [f"ε is reported at δ = {self.delta:g}, certified by the "
                      f"**{self.accountant}** accountant (dp-accounting), with {other} "
                      "alongside. Both are upper bounds.", ""]
        if not self.units:
            lines += ["**No differential privacy**: no mechanism released a DP event. The model "
                      "and the updates carry no formal privacy guarantee.", ""]
        for sc in self.scopes:
            if not sc.guarantee_holds:
                lines += [f"**NO GUARANTEE ({sc.mechanism})**: its random draws came from a "
                          "seeded simulation generator; anyone who knows the seed (it is in "
                          "config.toml) can replay the noise and the sampling. The ε below "
                          "holds only against parties who do not know the seed.", ""]
        scopes = {sc.unit_kind: sc for sc in self.scopes}
        clients = [u for u in self.units if u.kind == UnitKind.CLIENT.value]
        examples = [u for u in self.units if u.kind == UnitKind.EXAMPLE.value]
        for u in clients:
            lines += ["## Client-level DP (one client's whole data set)", ""]
            lines += self._unit_md(u)
            if UnitKind.CLIENT.value in scopes:
                lines += scopes[UnitKind.CLIENT.value].markdown()
        if examples:
            lines += ["## Example-level DP inside each client (one training example)", ""]
            eps = [u.epsilon for u in examples if u.epsilon is not None]
            lines += [f"{len(examples)} clients, one ledger each (never summed across clients). "
                      f"ε ranges from {_fmt(min(eps, default=None))} to "
                      f"{_fmt(max(eps, default=None))}.", ""]
            lines += ["| client | ε | ε (PLD) | ε (RDP) | rounds | budget ε |",
                      "|---|---|---|---|---|---|"]
            for u in examples:
                lines.append(f"| {u.client} | {_fmt(u.epsilon)} | {_fmt(u.epsilon_pld)} | "
                             f"{_fmt(u.epsilon_rdp)} | {u.rounds_charged} | "
                             f"{_fmt(u.budget_epsilon)} |")
            lines += ["", "Mechanism of the worst-case client:", ""]
            worst = self.worst(UnitKind.EXAMPLE)
            if worst is not None:
                lines += self._unit_md(worst, header=False)
            if UnitKind.EXAMPLE.value in scopes:
                lines += scopes[UnitKind.EXAMPLE.value].markdown()
        if self.audits:
            lines += self._audit_md()
        lines += ["## Who sees what (confidentiality layer)", ""]
        for t in self.trust_assumptions:
            lines += [f"- **{t['mechanism']}** — {t['statement']} Server sees: "
                      f"{t['server_sees']}. Broken by: {t['broken_by']}. "
                      f"Dropouts tolerated: {t['dropouts_tolerated']}."]
        if not self.trust_assumptions:
            lines.append("- not declared")
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def _audit_md(self) -> list[str]:
        out = ["## Empirical audit (beside the accountant's ε)", "",
               "What an attacker with canaries or a loss threshold actually inferred from this "
               "run. An *estimate* may exceed the true ε; a *lower bound* above the accountant's "
               "ε would mean a bug in the audit or in the accounting. The final-model statistics "
               "read a weaker adversary than the accountant's, who sees every round.", "",
               "| method | kind | ε | confidence | accountant ε | threat model | details |",
               "|---|---|---|---|---|---|---|"]
        out += [a.markdown_row() for a in self.audits]
        return out + [""]

    @staticmethod
    def _unit_md(u: UnitReport, header: bool = True) -> list[str]:
        out = [f"- ε = **{_fmt(u.epsilon)}** at δ = {u.delta:g} ({u.accountant}); "
               f"PLD {_fmt(u.epsilon_pld)}, RDP {_fmt(u.epsilon_rdp)}",
               f"- neighbouring relation: {u.neighboring_relation.replace('_', ' ')}",
               f"- charged in {u.rounds_charged} rounds"]
        if u.budget_epsilon is not None:
            out.append(f"- budget: ε ≤ {_fmt(u.budget_epsilon)}")
        for m in u.mechanisms:
            params = ", ".join(f"{k}={v}" for k, v in m.items()
                               if k not in ("mechanism", "times", "dp_event"))
            out.append(f"- mechanism **{m['mechanism']}** × {m['times']}: {params}")
        return out + [""]

    def plot(self, path: str | Path) -> Path:
        """PNG of ε over rounds per unit (RDP per round as lines, PLD as markers)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for u in self.units:
            rows = [(float(r[0] or 0), float(r[1])) for r in u.epsilon_by_round
                    if r[1] is not None and math.isfinite(r[1])]
            label = "client-level" if u.client is None else f"client {u.client} (examples)"
            style: dict[str, Any] = {"lw": 2} if u.client is None else {"lw": 0.8, "alpha": 0.6}
            if rows:
                line, = ax.plot([r[0] for r in rows], [r[1] for r in rows], label=f"{label}, RDP",
                                **style)
                pld = [(float(r[0] or 0), float(r[2])) for r in u.epsilon_by_round
                       if r[2] is not None and math.isfinite(r[2])]
                ax.plot([r[0] for r in pld], [r[1] for r in pld], "o", color=line.get_color(),
                        ms=4)
            if u.budget_epsilon is not None:
                ax.axhline(u.budget_epsilon, ls="--", color="grey", lw=1)
        ax.set(xlabel="round", ylabel=f"ε at δ={self.delta or 0:g}",
               title="Privacy spent (lines: RDP, dots: PLD)")
        ax.grid(alpha=0.3)
        if len(self.units) <= 12 and self.units:
            ax.legend(fontsize=7)
        fig.tight_layout()
        out = Path(path)
        fig.savefig(out, dpi=100)
        plt.close(fig)
        return out
