"""Client-level DP-FedAvg: clip each client's delta, add Gaussian noise to the sum.

McMahan, Ramage, Talwar & Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018 (arXiv 1710.06963). Per round, with clip norm C, noise multiplier z, client weights
wₖ ∈ (0, 1] and inclusion probability q:

* each client sends xₖ = clip(Δₖ, C)/C (‖xₖ‖₂ ≤ 1) through the secure sum, pre-weighted by wₖ;
* the server adds N(0, z²) per coordinate to Σ wₖxₖ (sensitivity 1 under add/remove one) and
  uses the **fixed-denominator** estimator Δ̄ = C·(Σ wₖxₖ + N(0, z²I)) / (q·W), W = Σ_all wₖ,
  so the release does not depend on how many clients took part;
* the round is a sampled Gaussian mechanism: ``PoissonSampledDpEvent(q, GaussianDpEvent(z))``
  for Poisson client sampling (add/remove one client), or
  ``SampledWithoutReplacementDpEvent(N, k, GaussianDpEvent(z/2))`` for fixed-size sampling
  (replace one client: the sensitivity doubles to 2, hence z/2). R rounds compose in the
  client-level unit of the :class:`~privfl.accounting.ledger.PrivacyLedger`.

Adaptive clipping (:class:`~privfl.dp.clipping.AdaptiveClipping`) adds one coordinate
wₖ(bₖ − ½) to each client's vector, noised with σ_b on the server; the accountant is charged the
*total* z (see :mod:`privfl.dp.clipping`).

Weights must be uniform (wₖ = 1): FedAvg's wₖ = nₖ / maxⱼ nⱼ depends on the largest client's
data size, which is part of the protected unit — removing that client rescales everyone else's
weight, and the sum moves by far more than the sensitivity the noise is calibrated to. Such
weights are refused.

Threat model: the server is trusted to add the noise and to keep the round's sample secret; the
guarantee covers every released model (and anything computed from them) against any observer of
the models. It does not cover what the ledger never charged: the exact training losses and the
participant lists, which the driver therefore withholds (:meth:`CentralDP.release_policy`). It
does not hide individual updates from the server — that is the secure sum's job, and the report
says what the chosen secure sum protects. Noise and client sampling are drawn from a ChaCha20
CSPRNG (the noise with the floating-point attack mitigation of Holohan & Braghin) unless a
seeded ``numpy.random.Generator`` is passed for simulation: the noise can then be regenerated
from the seed, and the report states that there is no guarantee against anyone who knows it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from privfl._csprng import SecureRandom
from privfl._validation import require_real
from privfl.accounting.accountant import NeighboringRelation
from privfl.accounting.ledger import PrivacyLedger, PrivacyUnit
from privfl.accounting.report import Scope
from privfl.core.fedavg import FederationInfo
from privfl.core.history import RoundRecord
from privfl.core.release import ReleasePolicy, Withheld
from privfl.core.sampling import FixedSizeSampling, PoissonSampling
from privfl.core.spec import ClientId, SumResult, ValueSpec
from privfl.dp.clipping import AdaptiveClipping, FixedClipping, clip_l2, update_noise_multiplier
from privfl.errors import ConfigurationError

__all__ = ["CentralDP", "client_level_event", "randomness_label"]


def randomness_label(simulation: bool) -> str:
    """How a mechanism's random draws were made, as the report states it."""
    return ("seeded simulation generator: NO GUARANTEE against anyone who knows the seed"
            if simulation else "OS-seeded ChaCha20 CSPRNG")


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
class CentralDP:
    """Round hooks for client-level DP with fixed or adaptive clipping.

    Attributes:
        noise_multiplier: Total noise multiplier z > 0 (std z·C on the sum of clipped deltas).
        clipping: :class:`FixedClipping` or :class:`AdaptiveClipping`.
        ledger: Receives one client-level event per released round; its budget is checked
            before each round.
        rng: Seeded generator for simulation (no guarantee against anyone who knows its seed:
            the noise can be replayed); ``None`` draws noise and client sampling from the
            OS-seeded CSPRNG.
    """

    noise_multiplier: float
    clipping: FixedClipping | AdaptiveClipping
    ledger: PrivacyLedger
    rng: np.random.Generator | None = None
    _secure: SecureRandom | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        require_real("noise_multiplier", self.noise_multiplier, low=0.0, low_open=True,
                     tip="use DP mode 'off' for no noise.")
        if not isinstance(self.clipping, (FixedClipping, AdaptiveClipping)):
            raise ConfigurationError(f"`clipping` must be FixedClipping or AdaptiveClipping. "
                                     f"Found {self.clipping!r}.")

    @property
    def adaptive(self) -> bool:
        """Whether the clip norm adapts."""
        return isinstance(self.clipping, AdaptiveClipping)

    @property
    def mechanism(self) -> str:
        """Name for reports."""
        return "DP-FedAvg, adaptive clipping" if self.adaptive else "DP-FedAvg, fixed clipping"

    def _normal(self, size: int, std: float) -> npt.NDArray[np.float64]:
        if self.rng is not None:
            return self.rng.normal(0.0, std, size)
        if self._secure is None:
            self._secure = SecureRandom()
        return self._secure.normal(size, std)

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

    # --- RoundHooks ---------------------------------------------------------------------------
    def setup(self, spec: ValueSpec, info: FederationInfo) -> ValueSpec:
        """Derive the event, the estimator's denominator and the bounded value spec.

        Raises:
            ConfigurationError: Non-uniform client weights (see the module docstring).
        """
        if not np.all(info.weights == 1.0):
            raise ConfigurationError(
                "client-level DP needs uniform client weights: a weight n_k / max_j n_j depends "
                "on the largest client's data size, which is part of the protected unit, so "
                "removing one client moves the sum by more than the clip norm. Found weights "
                f"in [{float(np.min(info.weights)):g}, {float(np.max(info.weights)):g}]. "
                "Tip: Weighting.UNIFORM (`--weighting uniform`).")
        q = info.sampler.inclusion_probability(info.num_clients)
        self._d = spec.length
        self._denominator = q * float(np.sum(info.weights))
        self._event, relation = client_level_event(self.noise_multiplier, info.sampler,
                                                   info.num_clients)
        self._unit = PrivacyUnit.client_level(relation)
        self.ledger.require_supported(self._unit, self._event)
        self._z_update = self.noise_multiplier
        self._count_std = 0.0
        if isinstance(self.clipping, AdaptiveClipping):
            self._count_std = self.clipping.count_stddev(q * info.num_clients)
            self._z_update = update_noise_multiplier(self.noise_multiplier, self._count_std)
        extra = 1 if self.adaptive else 0
        return replace(spec, length=spec.length + extra, l2_bound=math.sqrt(1.0 + 0.25 * extra),
                       linf_bound=1.0)

    @property
    def unit(self) -> PrivacyUnit:
        """The client-level privacy unit (available after ``setup``)."""
        return self._unit

    @property
    def event(self) -> Any:
        """The DP event charged per round (available after ``setup``)."""
        return self._event

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Refuse the round if it would exceed the client-level budget."""
        self.ledger.check(self._unit, self._event)

    def client_value(self, round_id: int, client: ClientId,
                     delta: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """xₖ = clip(Δₖ, C)/C, plus bₖ − ½ for adaptive clipping (runs on the client)."""
        c = self.clipping.clip_norm
        clipped, norm = clip_l2(delta, c)
        x = clipped / np.float32(c)
        if not self.adaptive:
            return x
        bit = np.float32((1.0 if norm <= c else 0.0) - 0.5)
        return np.concatenate([x, [bit]]).astype(np.float32)

    def after_sum(self, round_id: int, result: SumResult,
                  record: RoundRecord) -> npt.NDArray[np.float64]:
        """Add the noise, record the event, return the fixed-denominator average."""
        c = self.clipping.clip_norm
        self.ledger.record(self._unit, self._event, round_id=round_id, mechanism=self.mechanism,
                           params=self._params())
        s = result.weighted_sum
        noisy = s[: self._d] + self._normal(self._d, self._z_update)
        record.extra["clip_norm"] = c
        record.extra["noise_std_on_average"] = self._z_update * c / self._denominator
        if isinstance(self.clipping, AdaptiveClipping):
            b = (float(s[self._d]) + float(self._normal(1, self._count_std)[0])) \
                / self._denominator + 0.5
            record.extra["unclipped_fraction"] = b
            self.clipping.update(b)
        out: npt.NDArray[np.float64] = c * noisy / self._denominator
        return out

    def _params(self) -> dict[str, Any]:
        p: dict[str, Any] = {"noise_multiplier": self.noise_multiplier,
                             "expected_weight_denominator": round(self._denominator, 6),
                             "randomness": randomness_label(self.simulation)}
        if isinstance(self.clipping, AdaptiveClipping):
            p.update(update_noise_multiplier=round(self._z_update, 6),
                     clipped_count_stddev=self._count_std,
                     target_unclipped_quantile=self.clipping.target_unclipped_quantile,
                     clip_learning_rate=self.clipping.learning_rate,
                     initial_clip_norm=self.clipping.initial_clip_norm)
        else:
            p["clip_norm"] = self.clipping.clip_norm
        return p
