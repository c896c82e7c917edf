"""Fixed-point encoding of real vectors into the ring Z_{2^b} with unbiased stochastic rounding.

A value v is encoded as ⌊v·2^f + u⌋ mod 2^b with u ~ U[0, 1): E[⌊v·2^f + u⌋] = v·2^f, so the
rounding is unbiased and its error is below 2^−f per value. Sums are taken mod 2^b and decoded
as signed integers.

No wrap-around, exactly. Every slot of every accepted input obeys |v| ≤ V, the exact rational
bound of :meth:`~privfl.core.spec.ValueSpec.input_bound`, so each encoded integer has
|⌊v·2^f + u⌋| ≤ V·2^f + 1 and a sum over at most n clients has magnitude ≤ ⌈n·V·2^f⌉ + n.
:func:`ring_for` picks the largest f with

    ⌈n·V·2^f⌉ + n ≤ 2^{b−1} − 1

in exact integer arithmetic (a float headroom such as 2.0**63 − n − 1 rounds to 2^63 and lets a
maximal sum wrap), and :meth:`RingEncoding.encode` refuses any value above V
(:class:`~privfl.errors.BoundViolationError`): the guarantee holds even for inputs that skipped
the spec's own checks. b = 32, or 64 when 32 bits cannot give the wanted precision; a
configuration whose sum could wrap is refused with the numbers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from privfl._validation import require_positive
from privfl.core.spec import ValueSpec
from privfl.errors import BoundViolationError, ConfigurationError, EncodingOverflowError

__all__ = ["RingEncoding", "ring_for", "rounding_rng"]


def _float_down(x: Fraction) -> float:
    """The largest float ≤ x (x ≥ 0)."""
    f = float(x)
    return math.nextafter(f, 0.0) if Fraction(f) > x else f


@dataclass(frozen=True, slots=True)
class RingEncoding:
    """Z_{2^bits} with ``frac_bits`` fractional bits.

    Attributes:
        bits: 32 or 64.
        frac_bits: f, the scale is 2^f.
        max_abs_sum: Largest |sum| that decodes without wrap-around (guaranteed by creation).
        value_bound: Largest |v| :meth:`encode` accepts per slot; ``ring_for`` sizes the ring so
            that ``max_clients`` such values never wrap.
    """

    bits: int
    frac_bits: int
    max_abs_sum: float
    value_bound: float

    def __post_init__(self) -> None:
        if self.bits not in (32, 64):
            raise ConfigurationError(f"`bits` must be 32 or 64. Found {self.bits}.")
        if not 0 <= self.frac_bits < self.bits - 1:
            raise ConfigurationError(f"`frac_bits` must be in [0, {self.bits - 1}). "
                                     f"Found {self.frac_bits}.")
        require_positive("value_bound", self.value_bound)

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
        """Stochastically rounded fixed point, reduced mod 2^b (two's complement).

        Raises:
            BoundViolationError: A value is NaN, infinite or above ``value_bound`` in magnitude
                (it could make the sum wrap); nothing is encoded.
        """
        v = np.asarray(values, dtype=np.float64)
        if v.size:
            peak = float(np.max(np.abs(v)))
            if not peak <= self.value_bound:  # also catches NaN
                raise BoundViolationError(
                    f"a value of magnitude {peak!r} exceeds the ring's per-value bound "
                    f"{self.value_bound!r}; encoding it could wrap the sum. Refusing.")
        scaled = v * 2.0**self.frac_bits
        fixed = np.floor(scaled + rng.random(scaled.shape)).astype(np.int64)
        return fixed.astype(self.dtype)  # int64 → uint wraps mod 2^b (two's complement)

    def decode(self, ring_sum: npt.NDArray[np.unsignedinteger]) -> npt.NDArray[np.float64]:
        """Signed decoding of a sum mod 2^b, back to reals."""
        signed = ring_sum.astype(np.int32 if self.bits == 32 else np.int64)
        out: npt.NDArray[np.float64] = signed.astype(np.float64) * 2.0**-self.frac_bits
        return out


def rounding_rng(seed: int | None, round_id: int, client: int) -> np.random.Generator:
    """The dither of stochastic rounding: fresh OS randomness, or (simulation) seeded.

    The dither only decides the last fixed-point bit of each value; a seed makes a simulated
    sum bit-identical across runs and transports. It protects nothing secret either way.
    """
    import secrets

    if seed is None:
        return np.random.default_rng(secrets.randbits(128))
    return np.random.default_rng([seed, round_id, client])


def _largest_frac_bits(total: Fraction, limit: int, cap: int) -> int | None:
    """The largest f ∈ [0, cap] with ⌈total·2^f⌉ ≤ limit, or ``None``."""
    def fits(f: int) -> bool:
        return math.ceil(total * Fraction(2) ** f) <= limit

    if not fits(0):
        return None
    f = max(0, min(cap, math.floor(math.log2(limit) - math.log2(total))))
    while f > 0 and not fits(f):
        f -= 1
    while f < cap and fits(f + 1):
        f += 1
    return f


def ring_for(spec: ValueSpec, *, precision: float = 1e-6, bits: int | None = None
             ) -> RingEncoding:
    """The ring encoding for summing ``spec.max_clients`` weighted values of ``spec``.

    Every slot of x' = (w·x, w) is bounded by V = :meth:`ValueSpec.input_bound`; f is the
    largest fractional precision with ⌈n·V·2^f⌉ + n ≤ 2^{b−1} − 1 (exact integers); b = 32
    unless that f gives a resolution coarser than ``precision``, then 64.

    Raises:
        ConfigurationError: ``spec`` has no bound.
        EncodingOverflowError: Even 64 bits cannot hold the sum at the wanted precision.
    """
    require_positive("precision", precision)
    bound = spec.input_bound()
    if bound is None:
        raise ConfigurationError(
            "ring encodings need bounded client values (`ValueSpec.l2_bound` or `linf_bound`). "
            "Tip: clip updates (client-level DP does) or set a bound.")
    n = spec.max_clients
    total = n * bound
    candidates = (bits,) if bits is not None else (32, 64)
    want = max(0, math.ceil(math.log2(1.0 / precision)))
    for b in candidates:
        limit = 2 ** (b - 1) - 1 - n
        if limit <= 0:
            continue
        f = _largest_frac_bits(total, limit, b - 2)
        if f is not None and (f >= want or bits is not None):
            return RingEncoding(b, f, _float_down(Fraction(limit, 2**f)), _float_down(bound))
    raise EncodingOverflowError(
        f"summing {n} values bounded by {float(bound):g} (weights <= {spec.max_weight:g}, "
        f"|sum| <= {float(total):g}) at precision {precision:g} needs {want} fractional bits "
        f"plus {math.ceil(math.log2(float(total))) + 1} integer bits: more than a "
        f"{candidates[-1]}-bit ring holds. Tip: lower the bound, the clients or the precision.")
