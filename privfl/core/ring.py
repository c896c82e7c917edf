"""Fixed-point encoding of real vectors into the ring Z_{2^b} with unbiased stochastic rounding.

A value v is encoded as ⌊v·2^f + u⌋ mod 2^b with u ~ U[0, 1): E[⌊v·2^f + u⌋] = v·2^f, so the
rounding is unbiased and its error is below 2^−f per value. Sums are taken mod 2^b and decoded
as signed integers: a true sum S decodes correctly iff |S·2^f| + n < 2^{b−1} (n rounding
errors below 1). :func:`ring_for` derives f (and b = 32, or 64 when 32 bits cannot give the
wanted precision) from the :class:`~privfl.core.spec.ValueSpec` and refuses a configuration
whose sum could wrap, with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privfl._validation import require_positive
from privfl.core.spec import ValueSpec
from privfl.errors import ConfigurationError, EncodingOverflowError

__all__ = ["RingEncoding", "ring_for"]


@dataclass(frozen=True, slots=True)
class RingEncoding:
    """Z_{2^bits} with ``frac_bits`` fractional bits.

    Attributes:
        bits: 32 or 64.
        frac_bits: f, the scale is 2^f.
        max_abs_sum: Largest |sum| that decodes without wrap-around (guaranteed by creation).
    """

    bits: int
    frac_bits: int
    max_abs_sum: float

    def __post_init__(self) -> None:
        if self.bits not in (32, 64):
            raise ConfigurationError(f"`bits` must be 32 or 64. Found {self.bits}.")
        if not 0 <= self.frac_bits < self.bits - 1:
            raise ConfigurationError(f"`frac_bits` must be in [0, {self.bits - 1}). "
                                     f"Found {self.frac_bits}.")

    @property
    def dtype(self) -> np.dtype[np.unsignedinteger]:
        """uint32 or uint64."""
        return np.dtype(np.uint32 if self.bits == 32 else np.uint64)

    @property
    def word_bytes(self) -> int:
        """Bytes per ring element on the wire."""
        return self.bits // 8

    @property
    def resolution(self) -> float:
        """2^−f: the rounding error bound of one value."""
        return 2.0**-self.frac_bits

    def encode(self, values: npt.NDArray[np.floating], rng: np.random.Generator
               ) -> npt.NDArray[np.unsignedinteger]:
        """Stochastically rounded fixed point, reduced mod 2^b (two's complement)."""
        scaled = np.asarray(values, dtype=np.float64) * 2.0**self.frac_bits
        fixed = np.floor(scaled + rng.random(scaled.shape)).astype(np.int64)
        return fixed.astype(self.dtype)  # int64 → uint wraps mod 2^b (two's complement)

    def decode(self, ring_sum: npt.NDArray[np.unsignedinteger]) -> npt.NDArray[np.float64]:
        """Signed decoding of a sum mod 2^b, back to reals."""
        signed = ring_sum.astype(np.int32 if self.bits == 32 else np.int64)
        out: npt.NDArray[np.float64] = signed.astype(np.float64) * 2.0**-self.frac_bits
        return out


def ring_for(spec: ValueSpec, *, precision: float = 1e-6, bits: int | None = None
             ) -> RingEncoding:
    """The ring encoding for summing ``spec.max_clients`` weighted values of ``spec``.

    The weighted values w·x have |w·xᵢ| ≤ max_weight·coordinate_bound; the weight slot holds
    w ≤ max_weight. The sum's bound S is max_clients times the larger of the two.
    f is the largest fractional precision that keeps |S·2^f| + n < 2^{b−1}; b = 32 unless that
    f gives a resolution coarser than ``precision``, then 64.

    Raises:
        ConfigurationError: ``spec`` has no bound.
        EncodingOverflowError: Even 64 bits cannot hold the sum at the wanted precision.
    """
    require_positive("precision", precision)
    bound = spec.coordinate_bound
    if bound is None:
        raise ConfigurationError(
            "ring encodings need bounded client values (`ValueSpec.l2_bound` or `linf_bound`). "
            "Tip: clip updates (client-level DP does) or set a bound.")
    n = spec.max_clients
    total = n * spec.max_weight * max(bound, 1.0)
    candidates = (bits,) if bits is not None else (32, 64)
    want = math.ceil(math.log2(1.0 / precision))
    for b in candidates:
        # largest f with total·2^f + n < 2^(b-1)
        room = 2.0 ** (b - 1) - n - 1
        if room <= 0:
            continue
        f = math.floor(math.log2(room / total))
        if f >= want or (bits is not None and f >= 0):
            f = min(f, b - 2)
            return RingEncoding(b, f, (2.0 ** (b - 1) - n - 1) * 2.0**-f)
    raise EncodingOverflowError(
        f"summing {n} values bounded by {bound:g} (weights <= {spec.max_weight:g}, |sum| <= "
        f"{total:g}) at precision {precision:g} needs {want} fractional bits plus "
        f"{math.ceil(math.log2(total)) + 1} integer bits: more than a "
        f"{candidates[-1]}-bit ring holds. Tip: lower the bound, the clients or the precision.")
