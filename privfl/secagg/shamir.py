"""Shamir t-of-n secret sharing of 32-byte secrets over a word-sized prime field, vectorized.

Field: GF(q) with q = 2³² − 5, the largest prime below 2³², so that a product of two field
elements fits in an unsigned 64-bit word and numpy does the arithmetic for all secrets, points
and limbs of a round at once. A 256-bit secret s is cut into nine 31-bit limbs
s = Σₖ sₖ·2^(31k) (the ninth holds the top 8 bits), and each limb is shared on its own: limb k is
the constant term of a polynomial fₖ of degree t−1 whose other t−1 coefficients are uniform in
GF(q), drawn from the OS CSPRNG (rejection sampling: no modulo bias). Share i is
(xᵢ, f₀(xᵢ), …, f₈(xᵢ)): nine little-endian u32 words, 36 bytes (the former field GF(2⁵²¹ − 1)
needed 66).

Why this keeps Shamir's information-theoretic hiding: for one polynomial over *any* field, the
values at t−1 distinct non-zero points are uniform and independent of the constant term
(the t−1 random coefficients are a bijection onto them). The nine polynomials have independent
coefficients, so t−1 shares — nine independent uniform tuples — are independent of all nine
limbs together, i.e. of s. The field size only has to exceed every limb (2³¹ < q) and every
point (points are 1 ≤ x < q, so that they stay distinct and non-zero modulo q). Any t shares
determine every limb by Lagrange interpolation at 0.

Reconstruction is O(t²) word operations per secret, vectorized across all secrets of a round
(no per-share Python big-integer work and no per-share modular inverse): with the numerators
N = Πⱼ xⱼ and denominators Dᵢ = xᵢ·Πⱼ≠ᵢ(xⱼ − xᵢ), the coefficients are λᵢ = N·Dᵢ⁻¹, and all
Dᵢ of all secrets are inverted together (Fermat, 32 vectorized squarings). Validation: a share
of the wrong length or with a limb ≥ q, too few shares, or a result whose limbs are not 31-bit
(8-bit for the top limb) — which random shares pass with probability about 2⁻³² — raise
:class:`~privfl.errors.ProtocolAbortError`; the callers then check each secret
cryptographically (its commitment, or its advertised public key).
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from privfl.errors import ConfigurationError, ProtocolAbortError

__all__ = ["LIMBS", "MAX_POINT", "PRIME", "SHARE_BYTES", "interpolate", "reconstruct",
           "reconstruct_many", "share", "share_many", "share_table"]

PRIME = 2**32 - 5
"""q, the field's prime."""
LIMB_BITS = 31
LIMBS = 9
"""31-bit limbs of a 256-bit secret (the last holds 8 bits)."""
SHARE_BYTES = 4 * LIMBS
"""36: one u32 per limb."""
MAX_POINT = PRIME - 1
"""Share points are integers 1 ≤ x ≤ MAX_POINT."""
_Q = np.uint64(PRIME)
_TOP_BITS = 256 - LIMB_BITS * (LIMBS - 1)
_LIMIT = np.array([1 << LIMB_BITS] * (LIMBS - 1) + [1 << _TOP_BITS], dtype=np.uint64)
_BATCH_WORDS = 1 << 18  # the S·t·t difference tensor of one batch stays in cache (2 MiB)

Array = npt.NDArray[np.uint64]


def _limbs(secret: bytes) -> Array:
    s = int.from_bytes(secret, "big")
    mask = (1 << LIMB_BITS) - 1
    return np.array([(s >> (LIMB_BITS * k)) & mask for k in range(LIMBS)], dtype=np.uint64)


def _from_limbs(limbs: Array) -> bytes:
    s = 0
    for k in range(LIMBS - 1, -1, -1):
        s = (s << LIMB_BITS) | int(limbs[k])
    return s.to_bytes(32, "big")


def _uniform(shape: tuple[int, ...]) -> Array:
    """Uniform elements of GF(q) from the OS CSPRNG (rejection sampling of 32-bit words)."""
    n = int(np.prod(shape))
    out = np.frombuffer(os.urandom(4 * n), dtype="<u4").astype(np.uint64)
    bad = np.flatnonzero(out >= _Q)
    while len(bad):  # probability 5/2³² per word
        out[bad] = np.frombuffer(os.urandom(4 * len(bad)), dtype="<u4").astype(np.uint64)
        bad = bad[out[bad] >= _Q]
    return out.reshape(shape)


def _check_points(xs: Sequence[int], threshold: int) -> None:
    if not 1 <= threshold <= len(xs):
        raise ConfigurationError(f"`threshold` must be in [1, {len(xs)}]. Found {threshold}.")
    if len(set(xs)) != len(xs) or min(xs) < 1 or max(xs) > MAX_POINT:
        raise ConfigurationError(
            f"share points must be distinct integers in [1, {MAX_POINT}].")


def share_many(secrets_: Sequence[bytes], xs: Sequence[int], threshold: int
               ) -> list[dict[int, bytes]]:
    """Share each 32-byte secret at the points ``xs`` (one dict ``{x: share}`` per secret).

    Horner's rule, vectorized over points, secrets and limbs: t−1 multiply-adds of an
    (m, secrets·9) array.

    Raises:
        ConfigurationError: A secret that is not 32 bytes, a bad threshold or bad points.
    """
    if any(len(s) != 32 for s in secrets_):
        raise ConfigurationError("Shamir secrets must be 32 bytes.")
    _check_points(xs, threshold)
    n = len(secrets_)
    consts = np.concatenate([_limbs(s) for s in secrets_]) if n else np.zeros(0, np.uint64)
    coeffs = _uniform((threshold - 1, n * LIMBS))
    x = np.asarray(xs, dtype=np.uint64)[:, None]
    y = np.zeros((len(xs), n * LIMBS), dtype=np.uint64)
    for c in coeffs[::-1]:
        y = (y * x + c) % _Q
    y = (y * x + consts) % _Q
    words = y.astype("<u4").reshape(len(xs), n, LIMBS)
    return [{int(xv): words[i, j].tobytes() for i, xv in enumerate(xs)} for j in range(n)]


def share(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Split a 32-byte ``secret`` into shares at the points ``xs`` (distinct, 1 ≤ x < q).

    Raises:
        ConfigurationError: Bad secret, threshold or points.
    """
    return share_many([secret], xs, threshold)[0]


def _prod_mod(a: Array) -> Array:
    """Product modulo q along the last axis (pairwise, log-depth)."""
    while a.shape[-1] > 1:
        if a.shape[-1] % 2:
            a = np.concatenate([a, np.ones(a.shape[:-1] + (1,), np.uint64)], axis=-1)
        a = (a[..., 0::2] * a[..., 1::2]) % _Q
    return a[..., 0]


def _inv_mod(a: Array) -> Array:
    """a⁻¹ = a^(q−2) modulo q, elementwise (every element non-zero)."""
    result = np.ones_like(a)
    base = a % _Q
    e = PRIME - 2
    while e:
        if e & 1:
            result = (result * base) % _Q
        base = (base * base) % _Q
        e >>= 1
    return result


def _lagrange_at_zero(x: Array) -> Array:
    """λ (S, t): the Lagrange coefficients at 0 of each row of points ``x`` (S, t)."""
    t = x.shape[1]
    diff = x[:, None, :] + (_Q - x[:, :, None])  # [s, i, j] = x_j − x_i (+ q), in [1, 2q)
    np.subtract(diff, _Q, out=diff, where=diff >= _Q)
    idx = np.arange(t)
    diff[:, idx, idx] = x  # Dᵢ = xᵢ · Πⱼ≠ᵢ (xⱼ − xᵢ)
    den = _prod_mod(diff)
    num = _prod_mod(x)  # N = Π xⱼ
    return (num[:, None] * _inv_mod(den)) % _Q


def reconstruct_many(shares: Mapping[Hashable, Mapping[int, bytes]], threshold: int
                     ) -> dict[Hashable, bytes]:
    """Every secret from at least ``threshold`` of its shares, in one vectorized pass.

    The first ``threshold`` shares by point are used. Secrets with the same number of shares
    are interpolated together, in batches that bound the memory.

    Raises:
        ProtocolAbortError: For the first secret (named by its key) with too few shares, a
            share that is not 36 bytes of field elements, or a result that is not a 256-bit
            secret (inconsistent shares).
    """
    keys = list(shares)
    xs = np.zeros((len(keys), threshold), dtype=np.uint64)
    ys = np.zeros((len(keys), threshold, LIMBS), dtype=np.uint64)
    for s, key in enumerate(keys):
        got = shares[key]
        if len(got) < threshold:
            raise ProtocolAbortError(
                f"secret reconstruction needs {threshold} shares; only {len(got)} arrived "
                f"(secret {key!r}).")
        points = sorted(got.items())[:threshold]
        if any(len(raw) != SHARE_BYTES or not 1 <= x <= MAX_POINT for x, raw in points):
            raise ProtocolAbortError(f"a share of secret {key!r} is not an element of the field")
        xs[s] = [x for x, _ in points]
        ys[s] = np.frombuffer(b"".join(raw for _, raw in points), dtype="<u4").reshape(
            threshold, LIMBS)
    return interpolate(keys, xs, ys)


def interpolate(keys: Sequence[Hashable], xs: Array, ys: npt.NDArray[Any]
                ) -> dict[Hashable, bytes]:
    """The secrets at 0 of the share table ``xs`` (S, t) and ``ys`` (S, t, 9), one per key.

    ``ys`` may be u32 words as received or u64.

    Raises:
        ProtocolAbortError: A limb outside the field, or a result that is not a 256-bit secret
            (inconsistent shares), naming the secret's key.
    """
    if len(keys) != len(xs) or xs.ndim != 2 or ys.shape != xs.shape + (LIMBS,):
        raise ProtocolAbortError("malformed share table")
    ys = ys.astype(np.uint64, copy=False)
    if (ys >= _Q).any():
        bad = keys[int(np.flatnonzero((ys >= _Q).any(axis=(1, 2)))[0])]
        raise ProtocolAbortError(f"a share of secret {bad!r} is not an element of the field")
    threshold = xs.shape[1]
    out: dict[Hashable, bytes] = {}
    batch = max(1, _BATCH_WORDS // max(1, threshold * threshold))
    for lo in range(0, len(keys), batch):
        lam = _lagrange_at_zero(xs[lo:lo + batch])
        limbs = ((lam[:, :, None] * ys[lo:lo + batch]) % _Q).sum(axis=1) % _Q
        ok = (limbs < _LIMIT).all(axis=1)
        for s in range(len(lam)):
            if not ok[s]:
                raise ProtocolAbortError(
                    f"reconstruction gave no valid secret (inconsistent shares of secret "
                    f"{keys[lo + s]!r})")
            out[keys[lo + s]] = _from_limbs(limbs[s])
    return out


def share_table(owners: npt.NDArray[np.int64], points: npt.NDArray[np.int64],
                words: npt.NDArray[np.uint32], wanted: Sequence[int], threshold: int
                ) -> tuple[Array, npt.NDArray[np.uint32]]:
    """Gather, for each ``wanted`` owner, its first ``threshold`` shares by point.

    ``owners[i]``, ``points[i]`` and ``words[i]`` (nine u32 limbs) describe share row i, as a
    server collects them from holders' replies: this replaces a dictionary per secret with one
    sort of all rows.

    Returns:
        ``xs`` (S, t) and ``ys`` (S, t, 9) for :func:`interpolate`.

    Raises:
        ProtocolAbortError: A wanted owner with fewer than ``threshold`` shares, a point
            outside [1, MAX_POINT], or a point repeated for one owner.
    """
    if not (len(owners) == len(points) == len(words)) or words.shape[1:] != (LIMBS,):
        raise ProtocolAbortError("malformed share rows")
    if len(points) and (points.min() < 1 or points.max() > MAX_POINT):
        raise ProtocolAbortError("a share point is outside the field")
    order = np.lexsort((points, owners))
    owners, points, words = owners[order], points[order], words[order]
    dup = (owners[1:] == owners[:-1]) & (points[1:] == points[:-1])
    if dup.any():
        raise ProtocolAbortError(f"two shares of secret {int(owners[1:][dup][0])} at one point")
    want = np.asarray(wanted, dtype=np.int64)
    lo = np.searchsorted(owners, want, side="left")
    hi = np.searchsorted(owners, want, side="right")
    short = np.flatnonzero(hi - lo < threshold)
    if len(short):
        i = int(short[0])
        raise ProtocolAbortError(
            f"secret reconstruction needs {threshold} shares; only {int(hi[i] - lo[i])} "
            f"arrived (secret {int(want[i])}).")
    idx = lo[:, None] + np.arange(threshold)[None, :]
    return points[idx].astype(np.uint64), words[idx]


def reconstruct(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares {x: share}.

    Raises:
        ProtocolAbortError: Fewer than ``threshold`` shares, or shares that are not field
            elements, or a result that is not a 32-byte secret.
    """
    return reconstruct_many({0: shares}, threshold)[0]
