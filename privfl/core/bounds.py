"""Bounding client updates for secure sums that need a bound, without differential privacy.

Encodings with a fixed range (the CKKS scale and modulus, a fixed-point ring) must know how large
each client's value can be, or a sum could silently wrap around. Client-level DP clips anyway;
without it, :class:`CoordinateClip` clips every coordinate of a delta to [−b, b] and declares
‖x‖∞ ≤ b to the secure sum. It adds no noise and gives no privacy guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from privfl._validation import require_positive
from privfl.core.fedavg import FederationInfo
from privfl.core.history import RoundRecord
from privfl.core.spec import ClientId, SumResult, ValueSpec

__all__ = ["CoordinateClip"]


@dataclass
class CoordinateClip:
    """Round hooks that clip each coordinate of each delta to [−bound, bound]."""

    bound: float = 1.0

    def __post_init__(self) -> None:
        require_positive("bound", self.bound)
        self._clipped = 0

    def setup(self, spec: ValueSpec, info: FederationInfo) -> ValueSpec:
        """Declare ‖x‖∞ ≤ bound."""
        return replace(spec, l2_bound=None, linf_bound=self.bound)

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Nothing to check."""
        self._clipped = 0

    def client_value(self, round_id: int, client: ClientId,
                     delta: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Clip coordinates (runs on the client)."""
        self._clipped += int(np.count_nonzero(np.abs(delta) > self.bound))
        return np.clip(delta, -self.bound, self.bound).astype(np.float32)

    def after_sum(self, round_id: int, result: SumResult,
                  record: RoundRecord) -> npt.NDArray[np.float64] | None:
        """The weighted mean (``None`` for an empty round); records the clipped coordinates."""
        record.extra["clipped_coordinates"] = float(self._clipped)
        return result.mean() if result.contributors else None
