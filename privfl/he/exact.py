"""Exact CKKS decryptions: quantise before encrypting, release only the rounded sum.

The threat (Li & Micciancio, "On the Security of Homomorphic Encryption on Approximate Numbers",
Eurocrypt 2021): a CKKS decryption yields m + e, where e is the encryption noise. A semi-honest
server that computed the aggregate ciphertext (c₀, c₁) itself and receives m + e back solves
c₀ + c₁·s = m + e (mod q₀) for the clients' secret key s — one decryption suffices — and then
decrypts every individual upload. Noise flooding (Li, Micciancio, Schultz & Sorrell, CRYPTO 2022)
hides e statistically but costs 20–30 bits of precision at a statistical security of 30–40
bits; privfl rounds instead, which costs a handful of bits and is exact:

* clients quantise each value v to X = ⌊v·2^f + u⌋, u ~ U[0, 1) (unbiased stochastic rounding,
  |X·2^−f − v| < 2^−f), so a sum of n inputs is an integer ΣX;
* a decryptor recovers ΣX from m + e **exactly**, because the sizing guarantees |e| below half a
  grid step in the worst case (not just with high probability), and releases ΣX·2^−f only. That
  is a function of the clients' inputs alone: it carries no information about e, hence none
  about s (the (δ, r)-exact CKKS idea of ePrint 2024/853 and Lattigo's ``DecodePublic``, with
  δ = 0 thanks to a deterministic bound);
* a residual larger than the bound means the ciphertext is not an honest sum of that many fresh
  encryptions under this key (another key, a corrupted aggregate): the decryptor refuses
  (:class:`~privfl.errors.DecryptionError`) and releases nothing.

COMPACT places 2^g·X directly in the plaintext coefficients (the error of n fresh encryptions is
bounded by 21·n per coefficient, SEAL's centred binomial, and 2^g > 42n); STANDARD (TenSEAL)
encodes X·2^−f in the slots and rounds each decoded slot, whose worst-case error is
:func:`~privfl.he.params.standard_error_bound`.

Threat model: a semi-honest server. A server that submits a crafted ciphertext for decryption
(not the sum, or with noise placed at a rounding boundary) is malicious and out of scope.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from privfl.errors import DecryptionError
from privfl.he.params import NOISE_BOUND

__all__ = ["from_coefficients", "quantize", "round_to_grid", "to_coefficients"]


def quantize(values: npt.NDArray[np.floating], frac_bits: int,
             rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """X = ⌊v·2^f + u⌋ with u ~ U[0, 1): unbiased, |X·2^−f − v| < 2^−f."""
    scaled = np.asarray(values, dtype=np.float64) * 2.0**frac_bits
    return np.floor(scaled + rng.random(scaled.shape)).astype(np.int64)


def to_coefficients(x: npt.NDArray[np.int64], noise_bits: int, q0: int, n: int
                    ) -> npt.NDArray[np.uint64]:
    """(X·2^g) mod q₀ as rows of N plaintext coefficients (zero-padded)."""
    chunks = max(1, -(-len(x) // n))
    padded = np.zeros(chunks * n, dtype=np.int64)
    padded[: len(x)] = x
    scaled = padded << np.int64(noise_bits)  # |X·2^g| < q0/2 < 2^59 by the sizing
    out: npt.NDArray[np.uint64] = np.mod(scaled, np.int64(q0)).astype(np.uint64)
    return out.reshape(chunks, n)


def from_coefficients(coeffs: npt.NDArray[np.int64], noise_bits: int, contributors: int,
                      length: int) -> npt.NDArray[np.int64]:
    """ΣX from centred coefficients 2^g·ΣX + E, checking |E| ≤ 21·contributors.

    Raises:
        DecryptionError: A residual exceeds the noise bound of ``contributors`` fresh
            encryptions: not an honest sum under this key; nothing is released.
    """
    half = np.int64(1 << (noise_bits - 1))
    total = np.floor_divide(coeffs + half, np.int64(1 << noise_bits))
    residual = coeffs - (total << np.int64(noise_bits))
    worst = int(np.max(np.abs(residual))) if residual.size else 0
    if worst > NOISE_BOUND * contributors:
        raise DecryptionError(
            f"a decrypted coefficient is off the grid by {worst}, more than the noise of "
            f"{contributors} fresh encryptions can be ({NOISE_BOUND * contributors}): the "
            "aggregate is not an honest sum under this round's key. Nothing is released.")
    if np.any(total[length:]):
        raise DecryptionError("the aggregate's padding decrypts to non-zero values.")
    out: npt.NDArray[np.int64] = total[:length]
    return out


def round_to_grid(decoded: npt.NDArray[np.float64], frac_bits: int,
                  bound: float) -> npt.NDArray[np.float64]:
    """Round decoded slots to the grid 2^−f, checking each error against ``bound`` (< half a step).

    Raises:
        DecryptionError: A slot is further than ``bound`` from the grid.
    """
    steps = np.rint(decoded * 2.0**frac_bits)
    worst = float(np.max(np.abs(decoded - steps * 2.0**-frac_bits))) if decoded.size else 0.0
    if not worst <= bound:
        raise DecryptionError(
            f"a decrypted slot is {worst:.3g} off the grid 2^-{frac_bits}, beyond the worst-case "
            f"decryption error {bound:.3g}: not an honest sum under this key. Nothing is "
            "released.")
    out: npt.NDArray[np.float64] = steps * 2.0**-frac_bits
    return out
