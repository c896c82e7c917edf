"""CKKS parameter sets, derived from the values they must sum, and checked for 128-bit security.

Two presets:

* ``COMPACT`` (default) — N = 4096, a minimal addition-only chain [q₀, 20] with q₀ sized from the
  :class:`~privfl.core.spec.ValueSpec`, seeded symmetric encryption (only c₀ and a 64-byte seed
  travel) and residues packed in ⌈log₂q₀/8⌉ bytes: about 5 bytes per parameter. Values are
  carried **exactly**: each is quantised to the grid 2^−f and placed, times 2^g, in one
  coefficient of the plaintext polynomial (N values per ciphertext), see :mod:`privfl.he.exact`.
* ``STANDARD`` — TenSEAL's public API with N = 8192, coeff_mod_bit_sizes [60, 40, 40] and scale
  2⁴⁰: what NVIDIA FLARE ships (about 57.6 bytes per parameter), kept for compatibility and as
  the baseline. Values are quantised to the grid 2^−f before encoding and decryptions are rounded
  back onto it.

Why both quantise: a CKKS decryption returns m + e, and whoever sees m + e next to the ciphertext
(c₀, c₁) solves c₀ + c₁·s = m + e for the secret key s (Li & Micciancio, Eurocrypt 2021). A
decryptor therefore releases only the exact sum on the grid, a function of the inputs alone; for
that the worst-case error must stay below half a grid step, which the sizing below guarantees
with no probability of failure.

Sizing. n = max_clients, V = exact bound on every input slot, ε_p = ``precision`` (bound on the
absolute error of the *sum*; stochastic rounding errs by less than 2^−f per client):

* ``f = ⌈log₂(n / ε_p)⌉`` so that n·2^−f ≤ ε_p;
* COMPACT: the decrypted coefficient is 2^g·ΣX + E with |E| ≤ 21·n (SEAL's fresh noise is a
  centred binomial bounded by 21), so g = ⌈log₂(42n + 1)⌉ makes the rounding exact; q₀ has the
  fewest bits b with 2^{b−2} > 2^g·n·(V·2^f + 1) + 21n (no wrap-around);
* STANDARD: a decoded slot errs by at most B = n·21.5·N/Δ (noise plus encoding rounding, summed
  over N coefficients) plus float round-off; f must satisfy 2^−f > 2B, so an ε_p finer than the
  fixed scale allows is refused rather than silently missed.

Security: Σ log₂qᵢ must not exceed SEAL's 128-bit bound for N (109 bits at N = 4096, 218 at
8192, 438 at 16384; HomomorphicEncryption.org standard).
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, replace
from fractions import Fraction

from privfl._validation import require_positive
from privfl.core.spec import ValueSpec
from privfl.errors import ConfigurationError, EncodingOverflowError

__all__ = ["COMPACT", "STANDARD", "Backend", "CKKSParams", "derive_params",
           "standard_error_bound"]

_MAX_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
_SPECIAL_PRIME_BITS = 20
#: SEAL's fresh encryption noise is a centred binomial distribution bounded by this.
NOISE_BOUND = 21


class Backend(enum.Enum):
    """How ciphertexts are produced and carried."""

    COMPACT = "compact"
    """tenseal.sealapi: seeded symmetric, exact coefficient encoding, byte-packed residues."""
    TENSEAL = "tenseal"
    """TenSEAL's public API: ``ts.ckks_vector`` and ``serialize()``."""


@dataclass(frozen=True, slots=True)
class CKKSParams:
    """A CKKS parameter set for an addition-only secure sum.

    Attributes:
        poly_modulus_degree: N, a power of two.
        coeff_mod_bit_sizes: Bit sizes of the modulus chain (the last one is the special prime,
            never on the wire).
        scale_bits: log₂ of the encoding scale Δ (COMPACT: of the coefficient scale 2^{f+g}).
        backend: COMPACT (sealapi) or TENSEAL.
        frac_bits: f: values are quantised to multiples of 2^−f before encryption and released
            decryptions are rounded to the same grid; ``None`` means "derive it"
            (:func:`derive_params`).
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    backend: Backend = Backend.COMPACT
    frac_bits: int | None = None

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n not in _MAX_BITS_128:
            raise ConfigurationError(
                f"`poly_modulus_degree` must be a power of two in [1024, 32768]. Found {n}.")
        chain = self.coeff_mod_bit_sizes
        if len(chain) < 2 or any(not 17 <= b <= 60 for b in chain):
            raise ConfigurationError(
                f"`coeff_mod_bit_sizes` needs >= 2 primes of 17..60 bits. Found {chain}.")
        total = sum(chain)
        if total > _MAX_BITS_128[n]:
            raise ConfigurationError(
                f"CKKS parameters below 128-bit security: the modulus has {total} bits but "
                f"N={n} allows at most {_MAX_BITS_128[n]}. Tip: use a larger N or fewer bits.")
        if not 1 <= self.scale_bits < chain[0]:
            raise ConfigurationError(
                f"`scale_bits` must be in [1, {chain[0]}). Found {self.scale_bits}.")
        if self.frac_bits is not None and not 0 <= self.frac_bits <= self.scale_bits:
            raise ConfigurationError(
                f"`frac_bits` must be in [0, scale_bits={self.scale_bits}]. "
                f"Found {self.frac_bits}.")

    @property
    def data_bits(self) -> int:
        """Bits of q₀, the prime ciphertexts carry on the wire."""
        return self.coeff_mod_bit_sizes[0]

    @property
    def noise_bits(self) -> int:
        """COMPACT: g, the headroom bits below each value's grid (scale_bits − frac_bits)."""
        return self.scale_bits - (self.frac_bits or 0)

    @property
    def values_per_ciphertext(self) -> int:
        """N coefficients (COMPACT), N/2 slots (TenSEAL)."""
        n = self.poly_modulus_degree
        return n if self.backend is Backend.COMPACT else n // 2

    @property
    def max_abs_sum(self) -> float:
        """Largest |sum| that decodes without wrap-around: q₀ / (2·Δ) with one bit of margin."""
        return 2.0 ** (self.data_bits - 2 - self.scale_bits)

    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical parameters (put in every message)."""
        text = f"ckks|{self.poly_modulus_degree}|{self.coeff_mod_bit_sizes}|{self.scale_bits}|" \
               f"{self.backend.value}|{self.frac_bits}|exact-v2"
        return hashlib.sha256(text.encode()).digest()


COMPACT = CKKSParams(4096, (40, _SPECIAL_PRIME_BITS), 32, Backend.COMPACT)
STANDARD = CKKSParams(8192, (60, 40, 40), 40, Backend.TENSEAL)


def standard_error_bound(params: CKKSParams, clients: int, max_abs_sum: float) -> float:
    """Worst-case |error| of one decoded TenSEAL slot for a sum of ``clients`` ciphertexts.

    Each coefficient carries noise |e| ≤ 21 plus encoding rounding ≤ ½ per ciphertext; a slot
    is a sum over N coefficients times roots of unity, divided by Δ. The float64 round-off of
    SEAL's FFTs is covered by 2⁻³⁰ of the largest sum.
    """
    n = params.poly_modulus_degree
    return (clients * (NOISE_BOUND + 0.5) * n / 2.0**params.scale_bits
            + max_abs_sum * 2.0**-30)


def _frac_bits_for(clients: int, precision: float) -> int:
    return max(0, math.ceil(math.log2(clients / precision)))


def derive_params(spec: ValueSpec, *, precision: float | None = 1e-6,
                  base: CKKSParams = COMPACT) -> CKKSParams:
    """Parameters able to sum ``spec.max_clients`` values of ``spec`` within ``precision``.

    ``precision`` bounds the absolute error of every coordinate of the decrypted sum, in the
    worst case. ``None`` (TenSEAL only) asks for the finest grid the fixed scale allows.

    Raises:
        ConfigurationError: ``spec`` has no bound, or ``precision`` is not > 0.
        EncodingOverflowError: No q₀ ≤ 60 bits can hold the sum at that precision, or the
            STANDARD scale cannot deliver it.
    """
    bound = spec.input_bound()
    if bound is None:
        raise ConfigurationError(
            "CKKS needs bounded client values (`ValueSpec.l2_bound` or `linf_bound`) to size "
            "its modulus. Tip: clip updates (client-level DP does) or set a bound.")
    n = spec.max_clients
    if base.backend is Backend.TENSEAL:
        return _derive_tenseal(base, n, float(n * bound), precision)
    if precision is None:
        precision = 1e-6
    require_positive("precision", precision)
    f = _frac_bits_for(n, precision)
    g = math.ceil(math.log2(2 * NOISE_BOUND * n + 1))
    peak = 2**g * n * (bound * 2**f + 1) + NOISE_BOUND * n  # |coefficient| before reduction
    q0 = max(30, math.ceil(math.log2(float(peak))) + 2)
    while Fraction(2) ** (q0 - 2) <= peak:
        q0 += 1
    if q0 > 60:
        raise EncodingOverflowError(
            f"summing {n} values with |value| <= {float(bound):g} to precision {precision:g} "
            f"needs a {q0}-bit prime (grid 2^-{f}, noise headroom 2^{g}); CKKS primes have at "
            "most 60 bits. Tip: lower the clip bound or the precision.")
    for degree in (base.poly_modulus_degree, 8192, 16384):
        if q0 + _SPECIAL_PRIME_BITS <= _MAX_BITS_128[degree]:
            return replace(base, poly_modulus_degree=degree,
                           coeff_mod_bit_sizes=(q0, _SPECIAL_PRIME_BITS), scale_bits=f + g,
                           frac_bits=f)
    raise EncodingOverflowError(f"no 128-bit-secure N holds a {q0}-bit modulus.")


def _derive_tenseal(base: CKKSParams, n: int, max_sum: float,
                    precision: float | None) -> CKKSParams:
    if max_sum > base.max_abs_sum:
        raise EncodingOverflowError(
            f"the sum can reach {max_sum:g} but {base} holds |sum| < {base.max_abs_sum:g}.")
    err = standard_error_bound(base, n, max_sum)
    finest = math.floor(-math.log2(2 * err))  # 2^-f > 2·err
    while 2.0**-finest <= 2 * err:
        finest -= 1
    if precision is None:
        f = finest
    else:
        require_positive("precision", precision)
        f = _frac_bits_for(n, precision)
        if f > finest:
            raise EncodingOverflowError(
                f"{base.poly_modulus_degree}-degree CKKS at scale 2^{base.scale_bits} cannot sum "
                f"{n} values to precision {precision:g}: a decryption may err by {err:.3g}, so "
                f"the finest exact grid is 2^-{finest} and the sum's worst-case error "
                f"{n * 2.0**-finest:.3g}. Tip: pass precision={n * 2.0**-finest:.3g} or None, "
                "use COMPACT, or a larger scale.")
    if f < 0:
        raise EncodingOverflowError(
            f"scale 2^{base.scale_bits} leaves no exact grid for {n} clients.")
    return replace(base, frac_bits=f)
