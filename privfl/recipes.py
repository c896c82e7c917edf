"""Presets that assemble the privacy layers without exposing their knobs one by one.

* :func:`local_dp_sgd` — example-level DP inside each client (Opacus DP-SGD), σ calibrated so
  that a client selected in every round ends at the target ε.
* :func:`dp_fedavg` — client-level DP (DP-FedAvg) with fixed or adaptive clipping, σ calibrated
  over the planned rounds for the client sampling scheme.

Each returns a :class:`DPPlan`: the client update and aggregation stages to hand to
:class:`~privfl.core.fedavg.FedAvg`, the ledger that records every DP event (with a budget equal
to the target, checked before each round), and :meth:`DPPlan.report`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from privfl.accounting.accountant import PLD_INTERVAL, Accountant, epsilon
from privfl.accounting.calibrate import (
    COARSE_PLD_INTERVAL,
    calibrate_noise_multiplier,
    calibrate_to,
)
from privfl.accounting.ledger import Budget, PrivacyLedger, UnitKind
from privfl.accounting.report import PrivacyReport
from privfl.core.client import ClientUpdate
from privfl.core.history import History
from privfl.core.sampling import ClientSampler, FixedSizeSampling
from privfl.core.securesum import TrustAssumption
from privfl.errors import ConfigurationError

__all__ = ["DPPlan", "build_dp", "distributed_dp", "dp_fedavg", "local_dp_sgd", "no_dp"]


@dataclass
class DPPlan:
    """The DP pieces of a run and how to report on them."""

    client_update: Any
    stages: Any = None
    ledger: PrivacyLedger | None = None
    notes: list[str] = field(default_factory=list)

    def report(self, trust: TrustAssumption, history: History | None = None) -> PrivacyReport:
        """The privacy report of the run so far, with what each ε covers (its scope)."""
        notes = list(self.notes)
        if history is not None and history.stopped_early:
            notes.append(f"The run stopped early: {history.stopped_early}")
        if self.ledger is None:
            notes.insert(0, "No differential privacy was applied.")
            return PrivacyReport(delta=None, accountant="none", units=[],
                                 trust_assumptions=[_trust_dict(trust)], notes=notes)
        withheld = list(history.withheld) if history is not None else []
        from privfl.core.stages import expand

        parts = [self.client_update, *expand(self.stages)]
        scopes = [c.scope(withheld) for c in parts if hasattr(c, "scope")]
        return PrivacyReport.from_ledger(self.ledger, trust_assumptions=[_trust_dict(trust)],
                                         notes=notes, scopes=scopes)


    def noise_warning(self, sampler: ClientSampler, num_clients: int, dim: int) -> str | None:
        """A warning if client-level noise will swamp the signal, before anything runs.

        Each round the averaged update carries Gaussian noise of std σ·C / n̄ per coordinate
        (n̄ expected clients per round), a noise vector of norm ≈ σ·C·√d / n̄, while the
        average of clipped updates has norm at most C. The ratio σ·√d / n̄ is therefore a
        lower bound on each round's noise-to-signal ratio; above 1 the noise outweighs the
        largest possible update every round and training rarely beats chance. ``None`` for
        example-level DP (local DP-SGD's noise is per step and per client) or no DP.
        """
        from privfl.core.stages import expand

        z = clip = None
        for st in [self.stages]:
            if st is None:
                continue
            if hasattr(st, "clipping") and hasattr(st, "noise_multiplier"):
                z = float(st.noise_multiplier)
                clip = getattr(st.clipping, "clip_norm", None) or getattr(
                    st.clipping, "initial_clip_norm", None)
        if z is None or clip is None or not expand(self.stages):
            return None
        expected = sampler.inclusion_probability(num_clients) * num_clients
        ratio = z * dim**0.5 / expected
        if ratio <= 1.0:
            return None
        needed = z * dim**0.5
        return (f"client-level DP noise will swamp the signal: noise multiplier {z:.3g} with "
                f"{expected:g} expected clients per round puts noise of std "
                f"{z * clip / expected:.3g} (sigma*C/n) on each of the {dim} coordinates of the "
                "averaged update, a norm "
                f"about {ratio:.3g}x the largest possible update (C = {clip:g}); expect accuracy "
                f"near chance. Tip: client-level DP needs about {needed:,.0f} clients per round "
                "for this model (sigma*sqrt(d)); try `--preset cross-device` (2,000 clients, "
                "10% per round), a smaller model, a larger epsilon, or `--dp local`.")


def _trust_dict(t: TrustAssumption) -> dict[str, str]:
    d = asdict(t)
    d["server_sees"] = t.server_sees.value
    return d


def no_dp(client_update: ClientUpdate) -> DPPlan:
    """A plan without DP (the report says so)."""
    return DPPlan(client_update=client_update)


def local_dp_sgd(*, rounds: int, steps: int, sample_rate: float, learning_rate: float,
                 delta: float, target_epsilon: float | None = None,
                 noise_multiplier: float | None = None, clip_norm: float = 1.0,
                 accountant: Accountant = Accountant.PLD, grad_sample_mode: Any = None,
                 secure_mode: bool = True) -> DPPlan:
    """Example-level DP-SGD on every client.

    With ``target_epsilon``, σ is the smallest value for which ``rounds × steps`` DP-SGD steps at
    rate q stay within (ε, δ) — the worst case of a client selected in every round — and the
    ledger's example-level budget is (ε, δ).
    """
    from privfl.dp.local import DPSGDClientUpdate, GradSampleMode

    ledger_budgets = {}
    notes = []
    if noise_multiplier is None:
        if target_epsilon is None:
            raise ConfigurationError("give `target_epsilon` or `noise_multiplier`.")
        noise_multiplier = calibrate_noise_multiplier(
            target_epsilon=target_epsilon, delta=delta, sample_rate=sample_rate,
            steps=rounds * steps, accountant=accountant)
        notes.append(f"noise_multiplier {noise_multiplier:.4g} was calibrated with "
                     f"{accountant.name} so that a client that trains in all {rounds} rounds "
                     f"({rounds * steps} DP-SGD steps at q={sample_rate:g}) ends at ε ≤ "
                     f"{target_epsilon:g}, δ={delta:g}.")
    if target_epsilon is not None:
        ledger_budgets[UnitKind.EXAMPLE] = Budget(target_epsilon, delta)
    ledger = PrivacyLedger(delta=delta, accountant=accountant, budgets=ledger_budgets,
                           horizon=rounds)
    update = DPSGDClientUpdate(
        noise_multiplier=noise_multiplier, clip_norm=clip_norm, sample_rate=sample_rate,
        steps=steps, learning_rate=learning_rate, ledger=ledger, secure_mode=secure_mode,
        grad_sample_mode=grad_sample_mode or GradSampleMode.AUTO)
    notes.append("Example-level DP: each client has its own ledger; ε is never summed "
                 "across clients. It covers everything a client sends and everything computed "
                 "from it; the exact training losses are not released (see the scope below).")
    return DPPlan(client_update=update, ledger=ledger, notes=notes)


def dp_fedavg(*, client_update: ClientUpdate, sampler: ClientSampler, num_clients: int,
              rounds: int, delta: float, target_epsilon: float | None = None,
              noise_multiplier: float | None = None, clip_norm: float | None = None,
              adaptive: bool = False, clipped_count_stddev: float | None = None,
              accountant: Accountant = Accountant.PLD,
              rng: np.random.Generator | None = None) -> DPPlan:
    """Client-level DP-FedAvg with central Gaussian noise on the sum.

    Fixed-size client sampling is analysed as sampling without replacement under the
    replace-one relation, which dp-accounting supports with RDP only: the plan switches the
    accountant to RDP and says so in its notes.
    """
    from privfl.dp.central import CentralDP, client_level_event
    from privfl.dp.clipping import AdaptiveClipping, FixedClipping

    notes: list[str] = []
    if isinstance(sampler, FixedSizeSampling) and accountant is Accountant.PLD:
        accountant = Accountant.RDP
        notes.append("Fixed-size client sampling is accounted as sampling without replacement "
                     "(replace-one neighbours) with RDP: dp-accounting's PLD has no analysis "
                     "for it. Use Poisson client sampling for PLD.")

    def eps_with(acc: Accountant, interval: float = PLD_INTERVAL) -> Any:
        def eps_of(z: float) -> float:
            import dp_accounting

            ev, rel = client_level_event(z, sampler, num_clients)
            return epsilon(dp_accounting.SelfComposedDpEvent(ev, rounds), delta=delta,
                           accountant=acc, relation=rel, pld_interval=interval)

        return eps_of

    if noise_multiplier is None:
        if target_epsilon is None:
            raise ConfigurationError("give `target_epsilon` or `noise_multiplier`.")
        pld = accountant is Accountant.PLD
        noise_multiplier = calibrate_to(
            eps_with(accountant, COARSE_PLD_INTERVAL if pld else PLD_INTERVAL), target_epsilon,
            upper_epsilon_of=eps_with(Accountant.RDP) if pld else None,
            certify=eps_with(accountant) if pld else None)
        notes.append(f"noise_multiplier {noise_multiplier:.4g} was calibrated with "
                     f"{accountant.name} so that {rounds} rounds end at ε ≤ {target_epsilon:g}, "
                     f"δ={delta:g} (client-level).")
    budgets = {UnitKind.CLIENT: Budget(target_epsilon, delta)} if target_epsilon else {}
    ledger = PrivacyLedger(delta=delta, accountant=accountant, budgets=budgets, horizon=rounds)
    clipping: FixedClipping | AdaptiveClipping
    if adaptive:
        clipping = AdaptiveClipping(initial_clip_norm=clip_norm or 0.1,
                                    clipped_count_stddev=clipped_count_stddev)
    else:
        clipping = FixedClipping(clip_norm or 1.0)
    stages = CentralDP(noise_multiplier=noise_multiplier, clipping=clipping, ledger=ledger,
                      rng=rng)
    notes.append("Client-level DP: the unit is one client's whole data set. The server is "
                 "trusted to add the noise and to keep each round's sample secret; the guarantee "
                 "covers the released models. The average uses a fixed denominator (expected "
                 "number of clients), so it does not depend on how many took part; client "
                 "weights are uniform.")
    return DPPlan(client_update=client_update, stages=stages, ledger=ledger, notes=notes)


def distributed_dp(*, client_update: ClientUpdate, secure_sum: Any, sampler: ClientSampler,
                   num_clients: int, dim: int, rounds: int, delta: float,
                   target_epsilon: float | None = None, noise_multiplier: float | None = None,
                   clip_norm: float = 1.0, min_clients_fraction: float = 0.5,
                   rng: np.random.Generator | None = None) -> DPPlan:
    """Client-level distributed DP (DDGauss) under a ring secure sum.

    σ is calibrated (RDP over ``ZCDpEvent``s) for the worst case the budget guard allows: every
    round with only ``min_clients_fraction`` of the expected clients' noise shares.
    """
    import dp_accounting

    from privfl.dp.distributed import DistributedDP, min_shares_for, plan_ddg

    expected = sampler.inclusion_probability(num_clients) * num_clients
    max_clients = sampler.max_clients(num_clients)
    min_shares = min_shares_for(min_clients_fraction, expected, max_clients)
    precision = secure_sum.precision
    notes = [f"Distributed DP: each client adds a discrete Gaussian share. The sum is released "
             f"only if at least {min_shares} of {expected:g} expected shares arrived (a protocol "
             "threshold: the secure sum aborts before revealing anything otherwise); each round "
             "is charged for the shares that arrived, and the budget guard charges the worst "
             "case first, so dropouts can never push ε past the budget. No amplification by "
             "client sampling is claimed. Accountant: RDP (zCDP events)."]

    def eps_of(z: float) -> float:
        plan = plan_ddg(noise_multiplier=z, length=dim, max_clients=max_clients,
                        expected_clients=expected, precision=precision)
        ev = dp_accounting.SelfComposedDpEvent(
            dp_accounting.ZCDpEvent(plan.worst_rho(min_shares)), rounds)
        from privfl.accounting.accountant import NeighboringRelation

        return epsilon(ev, delta=delta, accountant=Accountant.RDP,
                       relation=NeighboringRelation.REPLACE_WITH_ZERO)

    if noise_multiplier is None:
        if target_epsilon is None:
            raise ConfigurationError("give `target_epsilon` or `noise_multiplier`.")
        noise_multiplier = calibrate_to(eps_of, target_epsilon)
        notes.append(f"noise_multiplier {noise_multiplier:.4g} was calibrated with RDP so that "
                     f"{rounds} rounds end at ε ≤ {target_epsilon:g}, δ={delta:g}.")
    budgets = {UnitKind.CLIENT: Budget(target_epsilon, delta)} if target_epsilon else {}
    ledger = PrivacyLedger(delta=delta, accountant=Accountant.RDP, budgets=budgets,
                           horizon=rounds)
    stages = DistributedDP(noise_multiplier=noise_multiplier, clip_norm=clip_norm, ledger=ledger,
                          secure_sum=secure_sum, min_clients_fraction=min_clients_fraction,
                          rng=rng)
    return DPPlan(client_update=client_update, stages=stages, ledger=ledger, notes=notes)


def build_dp(cfg: Any, update: ClientUpdate, sampler: ClientSampler, num_clients: int,
             dim: int = 0, secure_sum: Any = None) -> DPPlan:
    """The plan for a :class:`~privfl.experiment.RunConfig`."""
    from privfl.experiment import DPMode

    acc = cfg.accountant
    target = cfg.epsilon or None
    sigma = cfg.noise_multiplier or None
    if cfg.dp is DPMode.OFF:
        return no_dp(update)
    if cfg.dp is DPMode.LOCAL:
        from privfl.dp.local import GradSampleMode

        steps = cfg.local_steps or max(1, round(cfg.local_epochs / cfg.dp_sample_rate))
        local = local_dp_sgd(rounds=cfg.rounds, steps=steps, sample_rate=cfg.dp_sample_rate,
                            learning_rate=cfg.lr, delta=cfg.delta, target_epsilon=target,
                            noise_multiplier=sigma, clip_norm=cfg.clip_norm or 1.0,
                            accountant=acc, grad_sample_mode=GradSampleMode(cfg.grad_sample_mode),
                            secure_mode=cfg.secure_randomness)
        local.notes.append("DP-SGD batches and noise came from the OS-seeded ChaCha20 CSPRNG."
                           if cfg.secure_randomness else _SEEDED_NOTE)
        return local
    rng = None if cfg.secure_randomness else np.random.default_rng(cfg.seed + 11)
    if cfg.dp is DPMode.DISTRIBUTED:
        if not hasattr(secure_sum, "precision"):
            raise ConfigurationError(
                "`--dp distributed` needs a ring secure sum: `--secure secagg`, `secagg+` or "
                f"`multiserver`. Found {cfg.secure.value!r}.")
        plan = distributed_dp(client_update=update, secure_sum=secure_sum, sampler=sampler,
                              num_clients=num_clients, dim=dim, rounds=cfg.rounds,
                              delta=cfg.delta, target_epsilon=target, noise_multiplier=sigma,
                              clip_norm=cfg.clip_norm or 1.0, rng=rng)
        plan.notes.append("Noise shares and client sampling came from the OS-seeded ChaCha20 "
                          "CSPRNG." if rng is None else _SEEDED_NOTE)
        return plan
    plan = dp_fedavg(client_update=update, sampler=sampler, num_clients=num_clients,
                     rounds=cfg.rounds, delta=cfg.delta, target_epsilon=target,
                     noise_multiplier=sigma, clip_norm=cfg.clip_norm or None,
                     adaptive=cfg.dp is DPMode.ADAPTIVE,
                     clipped_count_stddev=cfg.clipped_count_stddev or None, accountant=acc,
                     rng=rng)
    plan.notes.append("Central noise and client sampling came from the OS-seeded ChaCha20 "
                      "CSPRNG." if rng is None else _SEEDED_NOTE)
    return plan


_SEEDED_NOTE = ("NO GUARANTEE: --no-secure-randomness drew the noise and the sampling (clients, "
                "DP-SGD batches) from seeded simulation generators. Anyone who knows the seed "
                "(in config.toml) can regenerate the noise and subtract it from the released "
                "models; the ε stated here holds only against parties who do not know the seed.")
