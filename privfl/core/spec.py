"""What a secure sum needs to know to be safe, and what goes in and comes out of it.

A :class:`ValueSpec` is the sensitivity contract between the client side (clipping) and the secure
sum (encoding): the vector length, the bound each client's value respects, how many clients and
how much total weight may be summed. Ring sizes and CKKS scales are derived from it, and a
configuration whose sum could overflow is refused when the secure sum is created.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Protocol

import numpy as np
import numpy.typing as npt

from privfl._validation import require_int, require_positive
from privfl.errors import (
    BoundViolationError,
    ConfigurationError,
    NonFiniteUpdateError,
    ProtocolAbortError,
    ShapeMismatchError,
)

__all__ = [
    "BOUND_SLACK",
    "MAX_CLIENT_ID",
    "ClientId",
    "Contribution",
    "ContributionLike",
    "LazyContribution",
    "SumResult",
    "ValueSpec",
    "check_min_clients",
    "check_total_weight",
    "weighted_input",
]

ClientId = int
"""Clients are identified by non-negative integers below 2³², unique in a federation."""

#: Largest client id: ids travel as unsigned 32-bit integers in the wire format.
MAX_CLIENT_ID = 2**32 - 1

#: Relative tolerance of the bound checks in :meth:`ValueSpec.check_value` (float32 rounding of a
#: clipped update can land a hair above its bound). Every encoding is sized for the bound *times*
#: ``1 + BOUND_SLACK`` (:meth:`ValueSpec.input_bound`), so a value that passes the check fits.
BOUND_SLACK = 1e-6

#: Relative widening of :meth:`ValueSpec.input_bound` for float64 rounding (of w·x, and of the
#: norm that the check computes).
_PRODUCT_SLACK = Fraction(1, 2**30)


@dataclass(frozen=True, slots=True, kw_only=True)
class ValueSpec:
    """The shape and bounds of the values a secure sum adds.

    Attributes:
        length: Number of coordinates d of each client value.
        max_clients: Largest number of clients whose values may be summed in one round.
        l2_bound: Bound on ‖x‖₂ of each (unweighted) client value, usually the clip norm;
            ``None`` if unbounded (only the plain sum accepts that).
        linf_bound: Bound on ‖x‖∞ of each client value; defaults to ``l2_bound`` (‖x‖∞ ≤ ‖x‖₂).
        max_weight: Largest per-client weight w; clients send w·x and w.
        dtype: ``"float32"`` (4 bytes per coordinate on the plain wire) or ``"float64"``.
        min_clients: The sum is released only if at least this many clients contributed;
            with fewer the round aborts *before* anything about the sum is revealed. Distributed
            DP sets it to the noise-share count its accounting assumes, so that dropouts can
            never lower the noise below what was charged.
    """

    length: int
    max_clients: int
    l2_bound: float | None = None
    linf_bound: float | None = None
    max_weight: float = 1.0
    dtype: str = "float32"
    min_clients: int = 1

    def __post_init__(self) -> None:
        require_int("length", self.length, minimum=1)
        require_int("max_clients", self.max_clients, minimum=1)
        require_int("min_clients", self.min_clients, minimum=1, maximum=self.max_clients,
                    tip="it cannot exceed `max_clients`.")
        if self.l2_bound is not None:
            require_positive("l2_bound", self.l2_bound)
        if self.linf_bound is not None:
            require_positive("linf_bound", self.linf_bound)
        require_positive("max_weight", self.max_weight)
        if self.dtype not in ("float32", "float64"):
            raise ConfigurationError(
                f"`dtype` must be 'float32' or 'float64'. Found {self.dtype!r}.")

    @property
    def coordinate_bound(self) -> float | None:
        """The bound on |xᵢ| implied by the L∞ or the L2 bound, or ``None``."""
        bounds = [b for b in (self.linf_bound, self.l2_bound) if b is not None]
        return min(bounds) if bounds else None

    @property
    def max_abs_sum(self) -> float | None:
        """Bound on |Σ wₖ xₖ,ᵢ| over a round: max_clients · max_weight · coordinate bound."""
        b = self.coordinate_bound
        return None if b is None else self.max_clients * self.max_weight * b

    def input_bound(self) -> Fraction | None:
        """An exact bound on every slot of x' = (w·x, w) for a value that passes the checks.

        max_weight · max(coordinate_bound · (1 + BOUND_SLACK), 1), widened by 2⁻³⁰ for the
        float64 rounding of w·x and of the norm; ``None`` without a bound. Encodings size
        themselves from this exact rational, never from a rounded float, so that no accepted
        input can wrap a sum.
        """
        b = self.coordinate_bound
        if b is None:
            return None
        coord = Fraction(b) * (1 + Fraction(BOUND_SLACK))
        return Fraction(self.max_weight) * max(coord, Fraction(1)) * (1 + _PRODUCT_SLACK)

    def check_value(self, value: npt.NDArray[np.floating], weight: float) -> None:
        """Validate one client's value and weight against this spec (client side).

        Raises:
            ShapeMismatchError: Wrong shape.
            NonFiniteUpdateError: NaN or Inf in ``value``.
            BoundViolationError: Weight outside (0, max_weight], or a norm bound violated by
                more than ``BOUND_SLACK``: the client refuses and the round goes on without it.
        """
        if value.ndim != 1 or value.shape[0] != self.length:
            raise ShapeMismatchError(
                f"client value must have shape ({self.length},). Found {value.shape}.")
        if not np.isfinite(value).all():
            raise NonFiniteUpdateError("client value contains NaN or Inf; refusing to send it.")
        if (isinstance(weight, bool) or not isinstance(weight, (int, float))
                or not 0.0 < float(weight) <= self.max_weight):
            raise BoundViolationError(
                f"client weight must be in (0, max_weight={self.max_weight}]. Found {weight!r}. "
                "Tip: weights are normalised to (0, max_weight] by the driver.")
        slack = 1.0 + BOUND_SLACK
        if self.l2_bound is not None:
            norm = float(np.linalg.norm(value.astype(np.float64)))
            if norm > self.l2_bound * slack:
                raise BoundViolationError(
                    f"client value L2 norm must be <= l2_bound={self.l2_bound}. Found {norm}. "
                    "Tip: clip updates before the secure sum.")
        if self.linf_bound is not None:
            m = float(np.max(np.abs(value)))
            if m > self.linf_bound * slack:
                raise BoundViolationError(
                    f"client value L-inf norm must be <= linf_bound={self.linf_bound}. "
                    f"Found {m}.")


def weighted_input(spec: ValueSpec, contribution: ContributionLike | None,
                   mechanism: str) -> npt.NDArray[np.float64]:
    """Validate a client's contribution and return x' = (w·x, w) in float64 (length d + 1).

    Secure sums that carry the weight inside the sum use this on the client side.

    Raises:
        ConfigurationError: No contribution at the input stage, or a bound is violated.
        ShapeMismatchError: Wrong shape.
        NonFiniteUpdateError: NaN or Inf in the value.
    """
    if contribution is None:
        raise ConfigurationError(f"the {mechanism} sum needs a contribution at its input stage.")
    value = np.asarray(contribution.value)
    spec.check_value(value, contribution.weight)
    out = np.empty(spec.length + 1)
    out[:-1] = value.astype(np.float64) * contribution.weight
    out[-1] = contribution.weight
    return out


def check_min_clients(contributors: int, spec: ValueSpec, where: str) -> None:
    """Abort before a sum is revealed when fewer than ``spec.min_clients`` contributed.

    Raises:
        ProtocolAbortError: Too few contributors.
    """
    if contributors < spec.min_clients:
        raise ProtocolAbortError(
            f"{where}: {contributors} clients contributed; the sum is released only with at "
            f"least min_clients={spec.min_clients}. Nothing about the sum was revealed.")


def check_total_weight(weight: float, contributors: int, spec: ValueSpec, resolution: float,
                       where: str) -> None:
    """Abort when a decoded Σw is impossible for ``contributors`` clients of ``spec``.

    Every contributor's weight lies in (0, max_weight], so Σw ∈ (0, contributors·max_weight],
    up to ``resolution`` of rounding per client. A sum outside means the masks or shares did
    not cancel (a corrupted key or message); releasing it would hand the optimizer garbage.
    This is a coarse safeguard (a random sum lands in range with a probability of about
    max_weight / (2·per-value bound)); key confirmation and authentication are the real
    protection.

    Raises:
        ProtocolAbortError: The decoded weight is impossible.
    """
    slack = contributors * resolution
    if not 0.0 < weight <= contributors * spec.max_weight * (1 + BOUND_SLACK) + slack:
        raise ProtocolAbortError(
            f"{where}: the decoded total weight {weight:.6g} is impossible for {contributors} "
            f"contributors with weights in (0, {spec.max_weight:g}]: masks or shares did not "
            "cancel (a corrupted key or message). No result is released.")


@dataclass(frozen=True, slots=True)
class Contribution:
    """A client's input to a secure sum: the value x and its weight w (the sum adds w·x and w)."""

    value: npt.NDArray[np.floating]
    weight: float = 1.0


class ContributionLike(Protocol):
    """Anything with a value and a weight: a :class:`Contribution` or a lazy one."""

    @property
    def value(self) -> npt.NDArray[np.floating]:
        """The value x."""
        ...

    @property
    def weight(self) -> float:
        """The weight w."""
        ...


class LazyContribution:
    """A contribution computed on first use (a client trains only when its input is asked for).

    A client that drops before the secure sum's input stage never trains, so it spends no
    privacy budget and no compute; the value lives only as long as the exchange that sends it.
    """

    __slots__ = ("_compute", "_computed", "_done")

    def __init__(self, compute: Callable[[], Contribution]) -> None:
        self._compute = compute
        self._done: Contribution | None = None
        self._computed = False

    def _get(self) -> Contribution:
        if self._done is None:
            self._done = self._compute()
            self._computed = True
        return self._done

    @property
    def computed(self) -> bool:
        """Whether the value has been computed (it may have been released since)."""
        return self._computed

    def release(self) -> None:
        """Drop the value once it has been sent (a later use computes again, or refuses)."""
        self._done = None

    @property
    def value(self) -> npt.NDArray[np.floating]:
        """The value, computed now if it was not."""
        return self._get().value

    @property
    def weight(self) -> float:
        """The weight, computed now if it was not."""
        return self._get().weight


@dataclass(frozen=True, slots=True, kw_only=True)
class SumResult:
    """The output of a secure sum.

    Attributes:
        weighted_sum: Σₖ wₖ xₖ over the contributors (float64).
        total_weight: Σₖ wₖ over the contributors.
        contributors: The clients whose values are in the sum, sorted.
    """

    weighted_sum: npt.NDArray[np.float64]
    total_weight: float
    contributors: tuple[ClientId, ...]

    def mean(self) -> npt.NDArray[np.float64]:
        """The weighted mean Σ wₖxₖ / Σ wₖ."""
        if not math.isfinite(self.total_weight) or self.total_weight <= 0:
            raise ConfigurationError(
                f"`total_weight` must be > 0 to take a mean. Found {self.total_weight!r}.")
        return self.weighted_sum / self.total_weight
