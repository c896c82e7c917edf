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
**dropouts remove noise**, and each round is charged for the shares that actually arrived.
No amplification by client sampling is claimed.

Sampler. Discrete Gaussians come from the rejection sampler of Canonne, Kamath & Steinke
(NeurIPS 2020, Algorithm 3): a discrete Laplace proposal Y = G₁ − G₂ (geometric with
parameter e^{−1/t}, t = ⌊σ⌋ + 1), accepted with probability exp(−(|Y| − σ²/t)²/(2σ²)). It is
exact as an algorithm; here the geometric draws and the acceptance test use float64 uniforms
(from ChaCha20 unless a seeded generator is passed for simulation), as TF-Privacy's distributed
discrete Gaussian does. Noise tails beyond 12σ are resampled (probability < 1e-31 per value).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from privfl._csprng import SecureRandom
from privfl._validation import require_positive, require_probability
from privfl.accounting.accountant import NeighboringRelation
from privfl.accounting.ledger import PrivacyLedger, PrivacyUnit
from privfl.core.fedavg import FederationInfo
from privfl.core.history import RoundRecord
from privfl.core.spec import ClientId, SumResult, ValueSpec
from privfl.dp.clipping import clip_l2
from privfl.errors import ConfigurationError

__all__ = ["DDGPlan", "DistributedDP", "ddg_rho", "discrete_gaussian", "plan_ddg"]

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


def ddg_rho(*, l2_sensitivity: float, sigma: float, shares: int, dim: int) -> float:
    """ρ (zCDP) of the sum of ``shares`` N_Z(0, σ²) noise vectors (Kairouz et al. 2021)."""
    if shares < 1:
        raise ConfigurationError(f"`shares` must be >= 1. Found {shares}.")
    ks = np.arange(1, shares, dtype=np.float64)
    tau = float(10.0 * np.sum(np.exp(-2 * math.pi**2 * sigma**2 * ks / (ks + 1))))
    a = math.sqrt(l2_sensitivity**2 / (shares * sigma**2) + 0.5 * tau * dim)
    b = l2_sensitivity / (math.sqrt(shares) * sigma) + tau * math.sqrt(dim)
    return 0.5 * min(a, b) ** 2


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
class DistributedDP:
    """Round hooks for distributed DP with a ring secure sum (SecAgg, SecAgg+, multi-server).

    Attributes:
        noise_multiplier: z > 0: with all n̄ expected clients the sum carries noise of std z·C.
        clip_norm: C > 0, per-client L2 clip of the delta.
        ledger: Receives one client-level ``ZCDpEvent`` per round (RDP accountant).
        secure_sum: The ring secure sum (its ``precision`` fixes the ring's scale).
        min_clients_fraction: The budget guard assumes at least this fraction of the expected
            clients contribute; a round with fewer is still charged what it really cost.
        rng: Seeded generator for simulation; ``None`` draws from a CSPRNG.
    """

    noise_multiplier: float
    clip_norm: float
    ledger: PrivacyLedger
    secure_sum: Any
    min_clients_fraction: float = 0.5
    rng: np.random.Generator | None = None
    _secure: SecureRandom | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        require_positive("noise_multiplier", self.noise_multiplier)
        require_positive("clip_norm", self.clip_norm)
        require_probability("min_clients_fraction", self.min_clients_fraction)
        if not hasattr(self.secure_sum, "precision"):
            raise ConfigurationError(
                "distributed DP needs a ring secure sum (PairwiseSecureSum or "
                f"MultiServerSecureSum). Found {type(self.secure_sum).__name__}.")

    mechanism = "distributed discrete Gaussian (DDGauss) under secure aggregation"

    def _uniform(self, size: int) -> npt.NDArray[np.float64]:
        if self.rng is not None:
            u: npt.NDArray[np.float64] = 1.0 - self.rng.random(size)  # (0, 1]
            return u
        if self._secure is None:
            self._secure = SecureRandom()
        return self._secure.uniform(size)

    def setup(self, spec: ValueSpec, info: FederationInfo) -> ValueSpec:
        """Derive the expected shares, the local σ, the ring scale and the bounded spec."""
        if not np.allclose(info.weights, 1.0):
            raise ConfigurationError("distributed DP needs uniform client weights (the weight "
                                     "would scale the noise share). Tip: Weighting.UNIFORM.")
        self._d = spec.length
        self._expected = info.sampler.inclusion_probability(info.num_clients) * info.num_clients
        self._min_shares = max(1, math.ceil(self.min_clients_fraction * self._expected))
        self._plan = plan_ddg(noise_multiplier=self.noise_multiplier, length=spec.length,
                              max_clients=spec.max_clients, expected_clients=self._expected,
                              precision=self.secure_sum.precision)
        self._scale, self._sigma = self._plan.scale, self._plan.sigma
        self._unit = PrivacyUnit.client_level(NeighboringRelation.REPLACE_WITH_ZERO)
        self._planned = self._event(self._min_shares)
        self.ledger.require_supported(self._unit, self._planned)
        return self._plan.spec

    def _event(self, shares: int) -> Any:
        import dp_accounting

        return dp_accounting.ZCDpEvent(self._plan.rho(shares))

    @property
    def unit(self) -> PrivacyUnit:
        """The client-level unit (replace-with-zero relation)."""
        return self._unit

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Refuse the round if, with the fewest shares planned for, it would exceed the budget."""
        self.ledger.check(self._unit, self._planned)

    def client_value(self, round_id: int, client: ClientId,
                     delta: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """clip(Δ, C)/C plus this client's discrete Gaussian share (runs on the client)."""
        clipped, _ = clip_l2(delta, self.clip_norm)
        noise = discrete_gaussian(self._sigma, self._d, self._uniform)
        out: npt.NDArray[Any] = clipped.astype(np.float64) / self.clip_norm + noise / self._scale
        return out  # float64: x·2^f + z stays exact when the ring rounds it

    def after_sum(self, round_id: int, result: SumResult,
                  record: RoundRecord) -> npt.NDArray[np.float64]:
        """Charge the shares that arrived; return the fixed-denominator average."""
        shares = len(result.contributors)
        record.extra["noise_shares"] = float(shares)
        if shares == 0:
            return np.zeros(self._d)
        event = self._event(shares)
        self.ledger.record(self._unit, event, round_id=round_id, mechanism=self.mechanism,
                           already_released=True, params={
                               "noise_multiplier": self.noise_multiplier,
                               "clip_norm": self.clip_norm, "noise_shares": shares,
                               "expected_shares": round(self._expected, 3),
                               "local_sigma_ring_units": round(self._sigma, 3),
                               "ring_frac_bits": int(math.log2(self._scale))})
        record.extra["noise_std_on_average"] = (self.clip_norm * self._sigma / self._scale
                                                * math.sqrt(shares) / self._expected)
        out: npt.NDArray[np.float64] = self.clip_norm * result.weighted_sum / self._expected
        return out
