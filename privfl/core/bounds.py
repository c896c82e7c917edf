"""Bounding client updates for secure sums that need a bound, without differential privacy.

Encodings with a fixed range (the CKKS scale and modulus, a fixed-point ring) must know how large
each client's value can be, or a sum could silently wrap around. Client-level DP clips anyway;
without it, :class:`CoordinateClip` clips every coordinate of a delta to [−b, b] and declares
‖x‖∞ ≤ b to the secure sum. It adds no noise and gives no privacy guarantee.

How many coordinates were clipped is measured without a side channel: each client appends the
fraction it clipped as one more coordinate, which travels *inside* the secure sum; the server
learns only the weighted total and strips it from the aggregate.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np
import numpy.typing as npt

from privfl._validation import require_positive
from privfl.core import wire
from privfl.core.history import RoundRecord
from privfl.core.spec import ClientId, ValueSpec
from privfl.core.stages import Aggregate, ChainContext, read_config, strip_aux
from privfl.errors import MalformedMessageError

__all__ = ["CoordinateClip", "CoordinateClipClient"]

_CONFIG = wire.Schema(kind=62, name="stage.coordinate_clip", fields=(
    wire.Field(1, "bound", wire.FieldType.FLOAT),))


@dataclass
class CoordinateClip:
    """Clip each coordinate of each delta to [−bound, bound] (overflow safety, no privacy).

    Attributes:
        bound: b > 0. It defends the encoding, not privacy: a coordinate beyond the bound the
            secure sum was sized for could wrap a ring sum or a CKKS modulus.
    """

    bound: float = 1.0
    kind: ClassVar[str] = "coordinate_clip"

    def __post_init__(self) -> None:
        require_positive("bound", self.bound)

    def configure(self, spec: ValueSpec, ctx: ChainContext) -> ValueSpec:
        """Declare ‖x‖∞ ≤ max(bound, 1) over the value and its clipped-fraction coordinate."""
        return replace(spec, length=spec.length + 1, l2_bound=None,
                       linf_bound=max(self.bound, 1.0))

    def client_config(self) -> bytes:
        """The bound."""
        return wire.encode(_CONFIG, 0, {"bound": self.bound})

    def round_config(self, round_id: int) -> None:
        """Nothing changes between rounds."""
        return None

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Nothing to check."""

    def finish(self, round_id: int, agg: Aggregate, record: RoundRecord) -> Aggregate:
        """Strip the clipped fraction; record its weighted mean over the contributors."""
        (clipped,) = strip_aux(agg, 1)
        if agg.total_weight > 0:
            record.extra["clipped_fraction"] = float(clipped) / agg.total_weight
        return agg


@dataclass(frozen=True)
class CoordinateClipClient:
    """Client half: clip coordinates, append the clipped fraction."""

    bound: float

    @classmethod
    def from_config(cls, config: bytes) -> CoordinateClipClient:
        """Rebuild from the server's message."""
        bound = float(read_config(config, _CONFIG)["bound"])
        if not bound > 0:
            raise MalformedMessageError(f"coordinate bound must be > 0. Found {bound}.")
        return cls(bound)

    def apply(self, x: npt.NDArray[np.float64], round_config: bytes | None, *,
              client_id: ClientId, round_id: int) -> npt.NDArray[np.float64]:
        """Clip to ±bound and append the fraction of coordinates that were clipped."""
        frac = float(np.count_nonzero(np.abs(x) > self.bound)) / max(1, len(x))
        out = np.empty(len(x) + 1)
        np.clip(x, -self.bound, self.bound, out=out[:-1])
        out[-1] = frac
        return out
