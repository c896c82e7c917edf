"""CKKS parameter sets, derived from the values they must sum, and checked for 128-bit security.

Two presets:

* ``COMPACT`` (default) — N = 4096, a minimal addition-only chain [q₀, 20] with q₀ sized from the
  :class:`~privfl.core.spec.ValueSpec`, seeded symmetric encryption (only c₀ and a 64-byte seed
  travel), complex packing (two reals per slot, N values per ciphertext) and residues packed in
  ⌈log₂q₀/8⌉ bytes: about 5 bytes per parameter for q₀ = 40 bits.
* ``STANDARD`` — TenSEAL's public API with N = 8192, coeff_mod_bit_sizes [60, 40, 40] and scale
  2⁴⁰: what NVIDIA FLARE ships (about 57.6 bytes per parameter), kept for compatibility and as
  the baseline.

Sizing (addition only, no rescaling): a sum S of bound |S| ≤ B encodes at scale Δ = 2^s as
integers of magnitude ≤ B·Δ, which must stay below q₀/2 to decode without wrap-around; the CKKS
noise of n summed fresh symmetric ciphertexts is about 2¹⁰·√n in scaled units, so a precision
ε_p needs Δ ≥ 2¹⁰·√n/ε_p. Hence s = ⌈log₂(2¹⁰·√n/ε_p)⌉ and log₂q₀ ≥ s + ⌈log₂B⌉ + 2.
Security: Σ log₂qᵢ must not exceed SEAL's 128-bit bound for N (109 bits at N = 4096, 218 at
8192, 438 at 16384; HomomorphicEncryption.org standard).
"""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass, replace

from privfl._validation import require_positive
from privfl.core.spec import ValueSpec
from privfl.errors import ConfigurationError, EncodingOverflowError

__all__ = ["COMPACT", "STANDARD", "Backend", "CKKSParams", "derive_params"]

_MAX_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
_SPECIAL_PRIME_BITS = 20


class Backend(enum.Enum):
    """How ciphertexts are produced and carried."""

    COMPACT = "compact"
    """tenseal.sealapi: seeded symmetric, complex packing, byte-packed residues."""
    TENSEAL = "tenseal"
    """TenSEAL's public API: ``ts.ckks_vector`` and ``serialize()``."""


@dataclass(frozen=True, slots=True)
class CKKSParams:
    """A CKKS parameter set for an addition-only secure sum.

    Attributes:
        poly_modulus_degree: N, a power of two.
        coeff_mod_bit_sizes: Bit sizes of the modulus chain (the last one is the special prime,
            never on the wire).
        scale_bits: log₂ of the encoding scale Δ.
        backend: COMPACT (sealapi) or TENSEAL.
    """

    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    backend: Backend = Backend.COMPACT

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
        if not 10 <= self.scale_bits < chain[0]:
            raise ConfigurationError(
                f"`scale_bits` must be in [10, {chain[0]}). Found {self.scale_bits}.")

    @property
    def data_bits(self) -> int:
        """Bits of q₀, the prime ciphertexts carry on the wire."""
        return self.coeff_mod_bit_sizes[0]

    @property
    def values_per_ciphertext(self) -> int:
        """N with complex packing (COMPACT), N/2 otherwise."""
        n = self.poly_modulus_degree
        return n if self.backend is Backend.COMPACT else n // 2

    @property
    def max_abs_sum(self) -> float:
        """Largest |sum| that decodes without wrap-around: q₀ / (2·Δ) with one bit of margin."""
        return 2.0 ** (self.data_bits - 2 - self.scale_bits)

    def fingerprint(self) -> bytes:
        """SHA-256 of the canonical parameters (put in every message)."""
        text = f"ckks|{self.poly_modulus_degree}|{self.coeff_mod_bit_sizes}|{self.scale_bits}|" \
               f"{self.backend.value}"
        return hashlib.sha256(text.encode()).digest()


COMPACT = CKKSParams(4096, (40, _SPECIAL_PRIME_BITS), 32, Backend.COMPACT)
STANDARD = CKKSParams(8192, (60, 40, 40), 40, Backend.TENSEAL)


def derive_params(spec: ValueSpec, *, precision: float = 1e-6,
                  base: CKKSParams = COMPACT) -> CKKSParams:
    """Parameters able to sum ``spec.max_clients`` values of ``spec`` to ``precision``.

    The weight slot (Σw ≤ max_clients·max_weight) is part of the bound.

    Raises:
        ConfigurationError: ``spec`` has no bound, or ``precision`` is not > 0.
        EncodingOverflowError: No q₀ ≤ 60 bits can hold the sum at that precision.
    """
    require_positive("precision", precision)
    bound = spec.max_abs_sum
    if bound is None:
        raise ConfigurationError(
            "CKKS needs bounded client values (`ValueSpec.l2_bound` or `linf_bound`) to size "
            "its modulus. Tip: clip updates (client-level DP does) or set a bound.")
    bound = max(bound, spec.max_clients * spec.max_weight)
    n = spec.max_clients
    if base.backend is Backend.TENSEAL:
        if bound > base.max_abs_sum:
            raise EncodingOverflowError(
                f"the sum can reach {bound:g} but STANDARD parameters hold |sum| < "
                f"{base.max_abs_sum:g}.")
        return base
    scale_bits = max(20, math.ceil(math.log2(2**10 * math.sqrt(n) / precision)))
    q0 = scale_bits + max(0, math.ceil(math.log2(bound))) + 2
    if q0 > 60:
        raise EncodingOverflowError(
            f"summing {n} values with |sum| <= {bound:g} at precision {precision:g} needs a "
            f"{q0}-bit prime (scale 2^{scale_bits}); CKKS primes have at most 60 bits. Tip: "
            "lower the clip bound or the precision.")
    q0 = max(q0, 30)
    for degree in (base.poly_modulus_degree, 8192, 16384):
        if q0 + _SPECIAL_PRIME_BITS <= _MAX_BITS_128[degree]:
            return replace(base, poly_modulus_degree=degree,
                           coeff_mod_bit_sizes=(q0, _SPECIAL_PRIME_BITS), scale_bits=scale_bits)
    raise EncodingOverflowError(f"no 128-bit-secure N holds a {q0}-bit modulus.")
