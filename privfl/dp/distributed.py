"""Distributed DP: clients add discrete Gaussian noise shares under secure aggregation.

DDGauss (Kairouz, Liu & Steinke, "The Distributed Discrete Gaussian Mechanism for Federated
Learning with Secure Aggregation", ICML 2021, arXiv 2102.06387). Each client clips its delta to
C, scales it to ‖x‖₂ ≤ 1, and adds — in the integer ring of the secure sum, before masking — a
noise share drawn from the discrete Gaussian N_Z(0, σ²) per coordinate, σ = z·2^f/√n̄ for n̄
expected clients and f fractional bits. The server only ever sees the masked inputs and their
noised sum.

Accounting. The ring sum has L2 sensitivity Δ = 2^f + √D in integer units (the scaled clip bound
plus at most one unit of stochastic rounding per coordinate, D coordinates), under the relation
"replace one client's update by zero, its noise share staying". The sum of n independent
N_Z(0, σ²) shares satisfies ½ε²-zCDP (Kairouz, Liu & Steinke 2021) with

    ε = min( √(Δ²/(nσ²) + ½τD),  Δ/(√n·σ) + τ√D ),   τ = 10·Σ_{k=1}^{n−1} exp(−2π²σ²·k/(k+1)),

i.e. ρ = ε²/2 per round, recorded as ``ZCDpEvent(ρ)`` and composed with RDP. As σ grows, τ → 0
and ρ → Δ²/(2nσ²): the continuous Gaussian mechanism with noise multiplier √n·σ/Δ (tested).
The number n of shares in a round is the number of clients whose input reached the sum:
**dropouts remove noise**. The budget therefore cannot be guarded after the fact: the minimum
share count m is a *protocol threshold* (``ValueSpec.min_clients``), so every secure sum aborts
before revealing anything when fewer than m inputs arrived; the budget guard charges the worst
case ρ_max = max_{m ≤ n ≤ N} ρ(n) before each round, and the round is then recorded with the
ρ(n) of the shares that really arrived (never more than ρ_max). The reported ε can therefore
never exceed the budget. No amplification by client sampling is claimed.

Sampler. Discrete Gaussians come from the rejection sampler of Canonne, Kamath & Steinke
(NeurIPS 2020, Algorithm 3): a discrete Laplace proposal Y = G₁ − G₂ (geometric with
parameter e^{−1/t}, t = ⌊σ⌋ + 1), accepted with probability exp(−(|Y| − σ²/t)²/(2σ²)). It is
exact as an algorithm; here the geometric draws and the acceptance test use float64 uniforms
(from ChaCha20 unless a seeded generator is passed for simulation), as TF-Privacy's distributed
discrete Gaussian does. Noise tails beyond 12σ are resampled (probability < 1e-31 per value).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from privfl._csprng import SecureRandom
from privfl._validation import require_positive, require_probability
from privfl.accounting.accountant import NeighboringRelation
from privfl.accounting.ledger import PrivacyLedger, PrivacyUnit
from privfl.accounting.report import Scope
from privfl.core import wire
from privfl.core.history import RoundRecord
from privfl.core.release import ReleasePolicy, Withheld
from privfl.core.spec import ClientId, ValueSpec
from privfl.core.stages import Aggregate, ChainContext, read_config
from privfl.dp.central import randomness_label, require_uniform_weights
from privfl.dp.clipping import FixedClipping
from privfl.errors import ConfigurationError, MalformedMessageError, ProtocolAbortError

__all__ = ["DDGPlan", "DistributedDP", "DistributedNoise", "DistributedNoiseClient", "ddg_rho",
           "discrete_gaussian", "min_shares_for", "plan_ddg"]

_TAIL = 12.0


def discrete_gaussian(sigma: float, size: int,
                      uniform: Callable[[int], npt.NDArray[np.float64]]
                      ) -> npt.NDArray[np.int64]:
    """``size`` draws of N_Z(0, σ²) (Canonne, Kamath & Steinke 2020, Algorithm 3)."""
    require_positive("sigma", sigma)
    t = math.floor(sigma) + 1
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        m = max(64, int(1.8 * (size - filled)))
        u = uniform(3 * m)
        g1 = np.floor(-t * np.log(u[:m]))
        g2 = np.floor(-t * np.log(u[m : 2 * m]))
        y = g1 - g2
        accept = u[2 * m :] < np.exp(-((np.abs(y) - sigma**2 / t) ** 2) / (2 * sigma**2))
        accept &= np.abs(y) <= _TAIL * sigma
        take = y[accept][: size - filled].astype(np.int64)
        out[filled : filled + len(take)] = take
        filled += len(take)
    return out


def _rho_range(l2_sensitivity: float, sigma: float, low: int, high: int,
               dim: int) -> npt.NDArray[np.float64]:
    """ρ(n) for n = low..high shares (one cumulative sum for every τ)."""
    ks = np.arange(1, high, dtype=np.float64)
    terms = np.exp(-2 * math.pi**2 * sigma**2 * ks / (ks + 1))
    tau = 10.0 * np.concatenate([[0.0], np.cumsum(terms)])[low - 1 : high]
    n = np.arange(low, high + 1, dtype=np.float64)
    a = np.sqrt(l2_sensitivity**2 / (n * sigma**2) + 0.5 * tau * dim)
    b = l2_sensitivity / (np.sqrt(n) * sigma) + tau * math.sqrt(dim)
    out: npt.NDArray[np.float64] = 0.5 * np.minimum(a, b) ** 2
    return out


def ddg_rho(*, l2_sensitivity: float, sigma: float, shares: int, dim: int) -> float:
    """ρ (zCDP) of the sum of ``shares`` N_Z(0, σ²) noise vectors (Kairouz et al. 2021)."""
    if shares < 1:
        raise ConfigurationError(f"`shares` must be >= 1. Found {shares}.")
    return float(_rho_range(l2_sensitivity, sigma, shares, shares, dim)[0])


def min_shares_for(fraction: float, expected_clients: float, max_clients: int) -> int:
    """The protocol threshold m = ⌈fraction · expected clients⌉, at least 1, at most N."""
    return min(max_clients, max(1, math.ceil(fraction * expected_clients)))


@dataclass(frozen=True, slots=True)
class DDGPlan:
    """The integer-domain quantities of one configuration (see the module docstring)."""

    spec: ValueSpec
    scale: float
    sigma: float
    sensitivity: float

    def rho(self, shares: int) -> float:
        """ZCDP ρ of one round in which ``shares`` noise shares reached the sum."""
        return ddg_rho(l2_sensitivity=self.sensitivity, sigma=self.sigma, shares=shares,
                       dim=self.spec.length + 1)

    def worst_rho(self, min_shares: int) -> float:
        """Max of ρ(n) over every share count the protocol can release: min_shares..N."""
        high = self.spec.max_clients
        if not 1 <= min_shares <= high:
            raise ConfigurationError(
                f"`min_shares` must be in [1, {high}] (max clients). Found {min_shares}.")
        return float(np.max(_rho_range(self.sensitivity, self.sigma, min_shares, high,
                                       self.spec.length + 1)))


def plan_ddg(*, noise_multiplier: float, length: int, max_clients: int,
             expected_clients: float, precision: float) -> DDGPlan:
    """Ring scale 2^f, local σ and sensitivity for the given noise multiplier."""
    from privfl.core.ring import ring_for

    local_real = noise_multiplier / math.sqrt(expected_clients)
    bounded = ValueSpec(length=length, max_clients=max_clients,
                        linf_bound=1.0 + _TAIL * local_real, max_weight=1.0, dtype="float64")
    scale = 2.0 ** ring_for(bounded, precision=precision).frac_bits
    return DDGPlan(bounded, scale, local_real * scale, scale + math.sqrt(length + 1))


@dataclass
class DistributedNoise:
    """Stage: each client adds a discrete Gaussian share in the ring; the server accounts.

    Needs a :class:`~privfl.dp.clipping.FixedClipping` stage outside it (values with ‖x‖₂ ≤ 1)
    and a ring secure sum inside (SecAgg, SecAgg+, multi-server).

    Attributes:
        noise_multiplier: z > 0: with all n̄ expected clients the sum carries noise of std z
            (times the clip norm, once the clipping stage rescales).
        ledger: Receives one client-level ``ZCDpEvent`` per round (RDP accountant).
        min_clients_fraction: A round's sum is released only if at least this fraction of
            the expected clients contributed noise shares (a protocol threshold: the secure sum
            aborts before revealing anything otherwise). It defends against dropouts — or a
            server that drops honest clients on purpose — shrinking the noise below what the
            accountant assumed.
        rng: Seeded generator for simulation (no guarantee against anyone who knows its seed);
            ``None`` lets every client draw its share from the OS-seeded CSPRNG.
    """

    noise_multiplier: float
    ledger: PrivacyLedger
    min_clients_fraction: float = 0.5
    rng: np.random.Generator | None = None
    kind: ClassVar[str] = "distributed_noise"
    mechanism: ClassVar[str] = "distributed discrete Gaussian (DDGauss) under secure aggregation"

    def __post_init__(self) -> None:
        require_positive("noise_multiplier", self.noise_multiplier)
        require_probability("min_clients_fraction", self.min_clients_fraction)

    @property
    def simulation(self) -> bool:
        """Whether the noise shares come from a seeded generator (no guarantee)."""
        return self.rng is not None

    def release_policy(self) -> ReleasePolicy:
        """Withhold losses and participation; sample clients from the CSPRNG (unless seeded)."""
        return ReleasePolicy(withheld=frozenset({Withheld.TRAIN_LOSS, Withheld.PARTICIPATION}),
                             secure_sampling=not self.simulation)

    def scope(self, withheld: list[str]) -> Scope:
        """What the client-level ε covers (``withheld``: what the run did not release)."""
        return Scope(
            unit_kind="client", mechanism=self.mechanism,
            covers=["the noised sum each round's secure sum releases — all the server learns "
                    "about the updates — and everything computed from it: the global models, "
                    "test metrics, this report"],
            withheld=list(withheld),
            assumed_public=["how many noise shares reached each round's sum (it sets that "
                            "round's ρ)", "the population size N, the expected clients per "
                            "round, the rounds, the clip norm"],
            not_covered=["colluding clients that subtract their own noise shares (each share "
                         "is calibrated for all expected clients)", "wall-clock timing and "
                         "traffic of a round"],
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

        restore_optional_generator(self.rng, state, "rng", "the noise shares")

    @property
    def min_shares(self) -> int:
        """The protocol threshold m (available after ``configure``)."""
        return self._min_shares

    @property
    def unit(self) -> PrivacyUnit:
        """The client-level unit (replace-with-zero relation)."""
        return self._unit

    # --- stage ----------------------------------------------------------------------------------
    def configure(self, spec: ValueSpec, ctx: ChainContext) -> ValueSpec:
        """Derive the expected shares, the local σ, the ring scale and the bounded spec.

        Raises:
            ConfigurationError: Non-uniform weights, no fixed clipping outside, auxiliary
                blocks, or a secure sum without a ring.
        """
        info = ctx.info
        require_uniform_weights(info.weights)
        if not hasattr(ctx.secure_sum, "precision"):
            raise ConfigurationError(
                "distributed DP needs a ring secure sum (PairwiseSecureSum or "
                f"MultiServerSecureSum). Found {type(ctx.secure_sum).__name__}.")
        if spec.l2_bound != 1.0 or ctx.aux:
            raise ConfigurationError("distributed DP needs a FixedClipping stage outside it and "
                                     "no auxiliary values (adaptive clipping is central only).")
        self._d = spec.length
        self._expected = info.sampler.inclusion_probability(info.num_clients) * info.num_clients
        self._min_shares = min_shares_for(self.min_clients_fraction, self._expected,
                                          spec.max_clients)
        self._plan = plan_ddg(noise_multiplier=self.noise_multiplier, length=spec.length,
                              max_clients=spec.max_clients, expected_clients=self._expected,
                              precision=ctx.secure_sum.precision)
        self._scale, self._sigma = self._plan.scale, self._plan.sigma
        self._unit = PrivacyUnit.client_level(NeighboringRelation.REPLACE_WITH_ZERO)
        import dp_accounting

        self._planned = dp_accounting.ZCDpEvent(self._plan.worst_rho(self._min_shares))
        self.ledger.require_supported(self._unit, self._planned)
        self._seed = int(self.rng.integers(2**62)) if self.rng is not None else 0
        return replace(self._plan.spec, min_clients=self._min_shares)

    def client_config(self) -> bytes:
        """σ in ring units, the ring scale, and (simulation only) the seed of the shares."""
        return wire.encode(_CONFIG, 0, {"sigma": self._sigma, "scale": self._scale,
                                        "simulation_seed": self._seed,
                                        "simulation": int(self.simulation)})

    def round_config(self, round_id: int) -> None:
        """Nothing changes between rounds."""
        return None

    def _event(self, shares: int) -> Any:
        import dp_accounting

        return dp_accounting.ZCDpEvent(self._plan.rho(shares))

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Refuse the round if its worst case (any releasable share count) exceeds the budget."""
        self.ledger.check(self._unit, self._planned)

    def finish(self, round_id: int, agg: Aggregate, record: RoundRecord) -> Aggregate:
        """Charge the shares that arrived; set the fixed denominator n̄.

        Raises:
            ProtocolAbortError: Fewer shares than the protocol threshold reached the sum (the
                secure sum should have aborted; the result is not used).
        """
        shares = len(agg.contributors)
        if shares == 0:
            return agg  # nothing was released: no charge, nothing to average
        if shares < self._min_shares:
            raise ProtocolAbortError(
                f"round {round_id}: the secure sum released {shares} noise shares, below the "
                f"threshold {self._min_shares}; the result is discarded.")
        record.extra["noise_shares"] = float(shares)
        self.ledger.record(self._unit, self._event(shares), round_id=round_id,
                           mechanism=self.mechanism, already_released=True, params={
                               "noise_multiplier": self.noise_multiplier,
                               "noise_shares": shares, "min_shares": self._min_shares,
                               "expected_shares": round(self._expected, 3),
                               "local_sigma_ring_units": round(self._sigma, 3),
                               "ring_frac_bits": int(math.log2(self._scale)),
                               "randomness": randomness_label(self.simulation)})
        record.extra["noise_std_on_average"] = (self._sigma / self._scale * math.sqrt(shares)
                                                / self._expected)
        agg.denominator = self._expected
        return agg


_CONFIG = wire.Schema(kind=66, name="stage.distributed_noise", fields=(
    wire.Field(1, "sigma", wire.FieldType.FLOAT), wire.Field(2, "scale", wire.FieldType.FLOAT),
    wire.Field(3, "simulation_seed", wire.FieldType.UINT),
    wire.Field(4, "simulation", wire.FieldType.UINT, max_uint=1)))


@dataclass(frozen=True)
class DistributedNoiseClient:
    """Client half of :class:`DistributedNoise`: add this client's discrete Gaussian share."""

    sigma: float
    scale: float
    seed: int | None

    @classmethod
    def from_config(cls, config: bytes) -> DistributedNoiseClient:
        """Rebuild from the server's message."""
        v = read_config(config, _CONFIG)
        sigma, scale = float(v["sigma"]), float(v["scale"])
        if not (sigma > 0 and scale >= 1 and math.isfinite(sigma) and math.isfinite(scale)):
            raise MalformedMessageError(f"bad noise share parameters σ={sigma}, scale={scale}")
        return cls(sigma, scale, int(v["simulation_seed"]) if v["simulation"] else None)

    def apply(self, x: npt.NDArray[np.float64], round_config: bytes | None, *,
              client_id: ClientId, round_id: int) -> npt.NDArray[np.float64]:
        """Return x + N_Z(0, σ²)/2^f per coordinate (float64 keeps x·2^f + z exact in the ring)."""
        if self.seed is None:
            uniform = SecureRandom().uniform
        else:
            rng = np.random.default_rng([self.seed, client_id, round_id])

            def uniform(size: int) -> npt.NDArray[np.float64]:
                u: npt.NDArray[np.float64] = 1.0 - rng.random(size)  # (0, 1]
                return u
        out: npt.NDArray[np.float64] = x + discrete_gaussian(self.sigma, len(x), uniform) \
            / self.scale
        return out


@dataclass
class DistributedDP:
    """Distributed DP as a stage group: :class:`FixedClipping` then :class:`DistributedNoise`.

    Attributes:
        noise_multiplier: z > 0 (see :class:`DistributedNoise`).
        clip_norm: C > 0, per-client L2 clip of the delta.
        ledger: Receives one client-level ``ZCDpEvent`` per round (RDP accountant).
        secure_sum: Optional: checked up front to be a ring secure sum.
        min_clients_fraction: The protocol threshold (see :class:`DistributedNoise`).
        rng: Seeded generator for simulation; ``None`` draws from the CSPRNG.
    """

    noise_multiplier: float
    clip_norm: float
    ledger: PrivacyLedger
    secure_sum: Any = None
    min_clients_fraction: float = 0.5
    rng: np.random.Generator | None = None

    def __post_init__(self) -> None:
        if self.secure_sum is not None and not hasattr(self.secure_sum, "precision"):
            raise ConfigurationError(
                "distributed DP needs a ring secure sum (PairwiseSecureSum or "
                f"MultiServerSecureSum). Found {type(self.secure_sum).__name__}.")
        self.clipping = FixedClipping(self.clip_norm)
        self.noise = DistributedNoise(self.noise_multiplier, self.ledger,
                                      self.min_clients_fraction, self.rng)

    mechanism = DistributedNoise.mechanism

    @property
    def stages(self) -> list[Any]:
        """The two stages, outermost first."""
        return [self.clipping, self.noise]

    @property
    def unit(self) -> PrivacyUnit:
        """The client-level unit (after configuration)."""
        return self.noise.unit

    @property
    def min_shares(self) -> int:
        """The protocol threshold (after configuration)."""
        return self.noise.min_shares
