"""Client-level DP-FedAvg: clip each client's delta, add Gaussian noise to the sum.

McMahan, Ramage, Talwar & Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018 (arXiv 1710.06963). Per round, with clip norm C, noise multiplier z, client weights
wₖ = 1 and inclusion probability q:

* each client sends xₖ = clip(Δₖ, C)/C (‖xₖ‖₂ ≤ 1) through the secure sum (a clipping stage);
* the server adds N(0, z²) per coordinate to Σ xₖ (sensitivity 1 under add/remove one) and
  uses the **fixed-denominator** estimator Δ̄ = C·(Σ xₖ + N(0, z²I)) / (q·N), so the release does
  not depend on how many clients took part (:class:`CentralNoise`);
* the round is a sampled Gaussian mechanism: ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``
  for Poisson client sampling (add/remove one client), or
  ``SampledWithoutReplacementDpEvent(N, k, GaussianDpEvent(z/2))`` for fixed-size sampling
  (replace one client: the sensitivity doubles to 2, hence z/2). R rounds compose in the
  client-level unit of the :class:`~privfl.accounting.ledger.PrivacyLedger`.

Adaptive clipping (:class:`~privfl.dp.clipping.AdaptiveClipping`) sends one auxiliary coordinate
through the sum; this stage adds its noise σ_b and charges the *total* z (see
:mod:`privfl.dp.clipping`). :class:`CentralDP` is the usual pair: a clipping stage, then this one.

Weights must be uniform (wₖ = 1): FedAvg's wₖ = nₖ / maxⱼ nⱼ depends on the largest client's data
size, which is part of the protected unit — removing that client rescales everyone else's
weight, and the sum moves by far more than the sensitivity the noise is calibrated to. Such
weights are refused.

Threat model: the server is trusted to add the noise and to keep the round's sample secret; the
guarantee covers every released model (and anything computed from them) against any observer of
the models. It does not cover what the ledger never charged: the exact training losses and the
participant lists, which the driver therefore withholds (:meth:`CentralNoise.release_policy`). It
does not hide individual updates from the server — that is the secure sum's job, and the report
says what the chosen secure sum protects. Noise and client sampling are drawn from a ChaCha20
CSPRNG (the noise with the floating-point attack mitigation of Holohan & Braghin) unless a
seeded ``numpy.random.Generator`` is passed for simulation: the noise can then be regenerated
from the seed, and the report states that there is no guarantee against anyone who knows it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from privfl._csprng import SecureRandom
from privfl._validation import require_real
from privfl.accounting.accountant import NeighboringRelation
from privfl.accounting.ledger import PrivacyLedger, PrivacyUnit
from privfl.accounting.report import Scope
from privfl.core.history import RoundRecord
from privfl.core.release import ReleasePolicy, Withheld
from privfl.core.sampling import FixedSizeSampling, PoissonSampling
from privfl.core.spec import ClientId, ValueSpec
from privfl.core.stages import Aggregate, ChainContext
from privfl.dp.clipping import AdaptiveClipping, FixedClipping
from privfl.errors import ConfigurationError

__all__ = ["CentralDP", "CentralNoise", "client_level_event", "randomness_label",
           "require_uniform_weights"]


def randomness_label(simulation: bool) -> str:
    """How a mechanism's random draws were made, as the report states it."""
    return ("seeded simulation generator: NO GUARANTEE against anyone who knows the seed"
            if simulation else "OS-seeded ChaCha20 CSPRNG")


def require_uniform_weights(weights: npt.NDArray[np.float64]) -> None:
    """Refuse non-uniform client weights under client-level DP (see the module docstring)."""
    if not np.all(weights == 1.0):
        raise ConfigurationError(
            "client-level DP needs uniform client weights: a weight n_k / max_j n_j depends "
            "on the largest client's data size, which is part of the protected unit, so "
            "removing one client moves the sum by more than the clip norm. Found weights "
            f"in [{float(np.min(weights)):g}, {float(np.max(weights)):g}]. "
            "Tip: Weighting.UNIFORM (`--weighting uniform`).")


def client_level_event(noise_multiplier: float, info_sampler: Any,
                       num_clients: int) -> tuple[Any, NeighboringRelation]:
    """The per-round DP event of DP-FedAvg for a sampling scheme, and its relation."""
    import dp_accounting

    if isinstance(info_sampler, PoissonSampling):
        g = dp_accounting.GaussianDpEvent(noise_multiplier)
        q = info_sampler.sample_rate
        ev = g if q >= 1.0 else dp_accounting.PoissonSampledDpEvent(q, g)
        return ev, NeighboringRelation.ADD_OR_REMOVE_ONE
    if isinstance(info_sampler, FixedSizeSampling):
        g = dp_accounting.GaussianDpEvent(noise_multiplier / 2)
        ev = dp_accounting.SampledWithoutReplacementDpEvent(
            num_clients, info_sampler.clients_per_round, g)
        return ev, NeighboringRelation.REPLACE_ONE
    raise ConfigurationError(
        f"client-level DP needs PoissonSampling or FixedSizeSampling. Found {info_sampler!r}.")


@dataclass
class CentralNoise:
    """Stage (server half only): Gaussian noise on the sum, fixed denominator, client-level ledger.

    Attributes:
        noise_multiplier: Total noise multiplier z > 0 (std z on the sum of clipped, 1/C-scaled
            deltas, shared with any auxiliary block such as adaptive clipping's count).
        ledger: Receives one client-level event per released round; its budget is checked
            before each round.
        rng: Seeded generator for simulation (no guarantee against anyone who knows its seed:
            the noise can be replayed); ``None`` draws noise and client sampling from the
            OS-seeded CSPRNG.
        mechanism: Name in reports.
    """

    noise_multiplier: float
    ledger: PrivacyLedger
    rng: np.random.Generator | None = None
    mechanism: str = "DP-FedAvg, fixed clipping"
    kind: ClassVar[str] = "central_noise"
    _secure: SecureRandom | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        require_real("noise_multiplier", self.noise_multiplier, low=0.0, low_open=True,
                     tip="use DP mode 'off' for no noise.")

    @property
    def simulation(self) -> bool:
        """Whether the noise comes from a seeded generator (no guarantee; see ``rng``)."""
        return self.rng is not None

    def release_policy(self) -> ReleasePolicy:
        """Withhold losses and participation; sample clients from the CSPRNG (unless seeded)."""
        return ReleasePolicy(withheld=frozenset({Withheld.TRAIN_LOSS, Withheld.PARTICIPATION}),
                             secure_sampling=not self.simulation)

    def scope(self, withheld: list[str]) -> Scope:
        """What the client-level ε covers (``withheld``: what the run did not release)."""
        return Scope(
            unit_kind="client", mechanism=self.mechanism,
            covers=["the global model after every round and everything computed from it: test "
                    "metrics, the adaptive clip norm, this report"],
            withheld=list(withheld),
            assumed_public=["the population size N, the sampling scheme and rate, the number "
                            "of rounds", "the clip norm (fixed) or its initial value and update "
                            "rule (adaptive)", "the server's test set"],
            not_covered=["what the server itself sees: each round's sample, and the individual "
                         "updates unless the secure sum hides them (the server is trusted with "
                         "both and to add the noise)", "wall-clock timing and traffic of a round "
                         "(they grow with the number of participants)"],
            randomness=randomness_label(self.simulation), guarantee_holds=not self.simulation)

    def state_dict(self) -> dict[str, Any]:
        """A seeded generator's position (``None`` with the CSPRNG, which has no state to keep).

        The ledger is checkpointed by the run, once, beside the stages that share it.
        """
        from privfl.core.checkpoint import optional_generator_state

        return {"rng": optional_generator_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the generator's position."""
        from privfl.core.checkpoint import restore_optional_generator

        restore_optional_generator(self.rng, state, "rng", "the central noise")

    def _normal(self, size: int, std: float) -> npt.NDArray[np.float64]:
        if self.rng is not None:
            return self.rng.normal(0.0, std, size)
        if self._secure is None:
            self._secure = SecureRandom()
        return self._secure.normal(size, std)

    # --- stage ----------------------------------------------------------------------------------
    def configure(self, spec: ValueSpec, ctx: ChainContext) -> ValueSpec:
        """Derive the event, the split of z among the blocks, and the fixed denominator.

        Raises:
            ConfigurationError: Non-uniform weights, no clipping stage outside, or a noise
                budget that the auxiliary blocks would exhaust.
        """
        info = ctx.info
        require_uniform_weights(info.weights)
        if spec.l2_bound is None:
            raise ConfigurationError("central noise needs a clipping stage outside it "
                                     "(FixedClipping or AdaptiveClipping).")
        q = info.sampler.inclusion_probability(info.num_clients)
        self._denominator = q * float(np.sum(info.weights))
        self._event, relation = client_level_event(self.noise_multiplier, info.sampler,
                                                   info.num_clients)
        self._unit = PrivacyUnit.client_level(relation)
        self.ledger.require_supported(self._unit, self._event)
        self._aux = list(ctx.aux)
        aux_len = sum(b.length for b in self._aux)
        main_sq = spec.l2_bound**2 - sum(b.l2_bound**2 for b in self._aux)
        self._main_l2 = math.sqrt(max(main_sq, 0.0))
        inv = self.noise_multiplier**-2 - sum((b.noise_std / b.l2_bound) ** -2 for b in self._aux)
        if inv <= 0:
            raise ConfigurationError(
                f"the auxiliary noise of {[b.owner for b in self._aux]} takes all of "
                f"noise_multiplier {self.noise_multiplier:g}. Tip: raise the auxiliary noise "
                f"(for adaptive clipping `clipped_count_stddev` to "
                f"{1.2 * self.noise_multiplier:.3g} or more, which leaves the update a noise "
                "multiplier within 1.1x of the total; or leave it at 0 to get that default), "
                "or sample more clients.")
        self._z_update = inv**-0.5
        self._main_len = spec.length - aux_len
        ctx.consumed = True
        return spec

    @property
    def unit(self) -> PrivacyUnit:
        """The client-level privacy unit (available after ``configure``)."""
        return self._unit

    @property
    def event(self) -> Any:
        """The DP event charged per round (available after ``configure``)."""
        return self._event

    @property
    def update_noise_multiplier(self) -> float:
        """z_Δ, the share of z the model update gets (z without auxiliary blocks)."""
        return float(self._z_update)

    def client_config(self) -> None:
        """No client half: the noise is added on the server."""
        return None

    def round_config(self, round_id: int) -> None:
        """No client half."""
        return None

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Refuse the round if it would exceed the client-level budget."""
        self.ledger.check(self._unit, self._event)

    def finish(self, round_id: int, agg: Aggregate, record: RoundRecord) -> Aggregate:
        """Record the event, add the noise to every block, set the fixed denominator."""
        self.ledger.record(self._unit, self._event, round_id=round_id, mechanism=self.mechanism,
                           params=self._params())
        s = agg.weighted_sum
        s[: self._main_len] += self._normal(self._main_len, self._z_update * self._main_l2)
        pos = self._main_len
        for b in self._aux:  # after the value: outer stages' blocks first (appended first)
            s[pos : pos + b.length] += self._normal(b.length, b.noise_std)
            pos += b.length
        agg.denominator = self._denominator
        record.extra["noise_std_on_average"] = self._z_update * self._main_l2 / self._denominator
        return agg

    def _params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"noise_multiplier": self.noise_multiplier,
                             "expected_weight_denominator": round(self._denominator, 6),
                             "randomness": randomness_label(self.simulation)}
        if self._aux:
            p["update_noise_multiplier"] = round(self._z_update, 6)
            for b in self._aux:
                p[f"{b.owner}_noise_std"] = b.noise_std
        return p


@dataclass
class CentralDP:
    """Client-level DP-FedAvg as a stage group: ``clipping`` then :class:`CentralNoise`.

    Attributes:
        noise_multiplier: Total noise multiplier z > 0 (std z·C on the sum of clipped deltas).
        clipping: :class:`FixedClipping` or :class:`AdaptiveClipping` (a stage).
        ledger: Receives one client-level event per released round.
        rng: Seeded generator for simulation; ``None`` draws from the CSPRNG.
    """

    noise_multiplier: float
    clipping: FixedClipping | AdaptiveClipping
    ledger: PrivacyLedger
    rng: np.random.Generator | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.clipping, (FixedClipping, AdaptiveClipping)):
            raise ConfigurationError(f"`clipping` must be FixedClipping or AdaptiveClipping. "
                                     f"Found {self.clipping!r}.")
        if isinstance(self.clipping, AdaptiveClipping) and self.clipping.noise_multiplier is None:
            self.clipping.noise_multiplier = self.noise_multiplier  # informs the default σ_b
        self.noise = CentralNoise(self.noise_multiplier, self.ledger, self.rng,
                                  mechanism=self.mechanism)

    @property
    def stages(self) -> list[Any]:
        """The two stages, outermost first."""
        return [self.clipping, self.noise]

    @property
    def adaptive(self) -> bool:
        """Whether the clip norm adapts."""
        return isinstance(self.clipping, AdaptiveClipping)

    @property
    def mechanism(self) -> str:
        """Name for reports."""
        return "DP-FedAvg, adaptive clipping" if self.adaptive else "DP-FedAvg, fixed clipping"

    @property
    def unit(self) -> PrivacyUnit:
        """The client-level unit (after configuration)."""
        return self.noise.unit

    @property
    def event(self) -> Any:
        """The DP event charged per round (after configuration)."""
        return self.noise.event
