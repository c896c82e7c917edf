"""Server optimizers applied to the averaged client delta (Reddi et al. 2021).

The average delta Δ̄ = Σ wₖΔₖ / Σ wₖ is a pseudo-gradient pointing *downhill* (Δₖ = θₖ − θ).
With server learning rate η:

* FedAvg (with optional server momentum β₁):  m ← β₁m + Δ̄;  θ ← θ + η·m
* FedAdagrad:  m ← β₁m + (1−β₁)Δ̄;  v ← v + Δ̄²;  θ ← θ + η·m/(√v + τ)
* FedAdam:     m ← β₁m + (1−β₁)Δ̄;  v ← β₂v + (1−β₂)Δ̄²;  θ ← θ + η·m/(√v + τ)
* FedYogi:     m ← β₁m + (1−β₁)Δ̄;  v ← v − (1−β₂)Δ̄²·sign(v − Δ̄²);  θ ← θ + η·m/(√v + τ)

Reference: S. Reddi et al., "Adaptive Federated Optimization", ICLR 2021 (arXiv 2003.00295),
Algorithm 2. ``τ`` controls the adaptivity (the paper uses 1e-3 and v₀ = τ²).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from privfl._validation import require_positive, require_real
from privfl.errors import ShapeMismatchError

__all__ = ["FedAdagrad", "FedAdam", "FedAvgServer", "FedYogi", "ServerOptimizer"]

Vector = npt.NDArray[np.float32]


class ServerOptimizer(Protocol):
    """Turns the averaged delta into the next global model."""

    def step(self, theta: Vector, avg_delta: npt.NDArray[np.floating]) -> Vector:
        """Return the new global vector (``theta`` is not modified)."""
        ...


def _check(theta: Vector, delta: npt.NDArray[np.floating]) -> None:
    if theta.shape != delta.shape:
        raise ShapeMismatchError(
            f"`avg_delta` must have shape {theta.shape}. Found {delta.shape}.")


@dataclass
class FedAvgServer:
    """θ ← θ + η·m with m ← β₁m + Δ̄ (β₁ = 0: plain FedAvg; β₁ > 0: FedAvgM)."""

    learning_rate: float = 1.0
    momentum: float = 0.0
    _m: npt.NDArray[np.float32] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        require_positive("learning_rate", self.learning_rate)
        require_real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)

    def step(self, theta: Vector, avg_delta: npt.NDArray[np.floating]) -> Vector:
        """One server update."""
        _check(theta, avg_delta)
        d = avg_delta.astype(np.float32, copy=False)
        if self.momentum > 0:
            self._m = d.copy() if self._m is None else self.momentum * self._m + d
            d = self._m
        return (theta + np.float32(self.learning_rate) * d).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """The momentum buffer (``None`` before the first step)."""
        return {"m": self._m}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s momentum buffer."""
        self._m = _buffer(state, "m")


def _buffer(state: Mapping[str, Any], key: str) -> npt.NDArray[np.float32] | None:
    from privfl.core.checkpoint import require_array

    if state.get(key) is None:
        return None
    return require_array(state, key, dtype=np.float32)


@dataclass
class _Adaptive:
    learning_rate: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3
    _m: npt.NDArray[np.float32] | None = field(default=None, init=False, repr=False)
    _v: npt.NDArray[np.float32] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        require_positive("learning_rate", self.learning_rate)
        require_real("beta1", self.beta1, low=0.0, high=1.0, high_open=True)
        require_real("beta2", self.beta2, low=0.0, high=1.0, high_open=True)
        require_positive("tau", self.tau)

    def _second_moment(self, v: npt.NDArray[np.float32],
                       d2: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        raise NotImplementedError  # pragma: no cover - every subclass overrides it

    def step(self, theta: Vector, avg_delta: npt.NDArray[np.floating]) -> Vector:
        """One adaptive server update."""
        _check(theta, avg_delta)
        d = avg_delta.astype(np.float32, copy=False)
        if self._m is None or self._v is None:
            self._m = np.zeros_like(d)
            self._v = np.full_like(d, self.tau**2)
        self._m = self.beta1 * self._m + (1 - self.beta1) * d
        self._v = self._second_moment(self._v, d * d)
        upd = self._m / (np.sqrt(self._v) + self.tau)
        return (theta + np.float32(self.learning_rate) * upd).astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        """The moment estimates m and v (``None`` before the first step)."""
        return {"m": self._m, "v": self._v}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`'s moments."""
        self._m, self._v = _buffer(state, "m"), _buffer(state, "v")


class FedAdagrad(_Adaptive):
    """v ← v + Δ̄² (Reddi et al. 2021)."""

    def _second_moment(self, v: npt.NDArray[np.float32],
                       d2: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return v + d2


class FedAdam(_Adaptive):
    """v ← β₂v + (1−β₂)Δ̄² (Reddi et al. 2021)."""

    def _second_moment(self, v: npt.NDArray[np.float32],
                       d2: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        return self.beta2 * v + (1 - self.beta2) * d2


class FedYogi(_Adaptive):
    """v ← v − (1−β₂)Δ̄²·sign(v − Δ̄²) (Reddi et al. 2021)."""

    def _second_moment(self, v: npt.NDArray[np.float32],
                       d2: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        out: npt.NDArray[np.float32] = v - (1 - self.beta2) * d2 * np.sign(v - d2)
        return out
