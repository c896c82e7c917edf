"""Shamir t-of-n secret sharing of 32-byte secrets over GF(2^521 − 1).

A secret s ∈ [0, 2^256) is the constant term of a uniformly random polynomial f of degree t−1
over the prime field GF(p), p = 2^521 − 1 (a Mersenne prime, larger than every secret); share i
is (i, f(i)) for i = 1..n. Any t shares determine s by Lagrange interpolation at 0; any t − 1
shares are independent of s (information-theoretic). Coefficients come from the OS CSPRNG.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from privfl.errors import ConfigurationError, ProtocolAbortError

__all__ = ["PRIME", "SHARE_BYTES", "reconstruct", "share"]

PRIME = 2**521 - 1
SHARE_BYTES = 66  # ⌈521 / 8⌉


def share(secret: bytes, xs: Sequence[int], threshold: int) -> dict[int, bytes]:
    """Split a 32-byte ``secret`` into shares at the points ``xs`` (distinct, ≥ 1).

    Raises:
        ConfigurationError: Bad threshold or points.
    """
    if len(secret) != 32:
        raise ConfigurationError("Shamir secrets must be 32 bytes.")
    if not 1 <= threshold <= len(xs):
        raise ConfigurationError(
            f"`threshold` must be in [1, {len(xs)}]. Found {threshold}.")
    if len(set(xs)) != len(xs) or min(xs) < 1:
        raise ConfigurationError("share points must be distinct integers >= 1.")
    coeffs = [int.from_bytes(secret, "big")] + [secrets.randbelow(PRIME)
                                                for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % PRIME
        out[x] = y.to_bytes(SHARE_BYTES, "big")
    return out


def reconstruct(shares: Mapping[int, bytes], threshold: int) -> bytes:
    """The secret from at least ``threshold`` shares {x: f(x)}.

    Raises:
        ProtocolAbortError: Fewer than ``threshold`` shares, or shares that are not field
            elements, or a result that is not a 32-byte secret.
    """
    if len(shares) < threshold:
        raise ProtocolAbortError(
            f"secret reconstruction needs {threshold} shares; only {len(shares)} arrived.")
    points = sorted(shares.items())[:threshold]
    xs = [x for x, _ in points]
    ys = []
    for _, raw in points:
        y = int.from_bytes(raw, "big")
        if len(raw) != SHARE_BYTES or y >= PRIME:
            raise ProtocolAbortError("a share is not an element of the field")
        ys.append(y)
    secret = 0
    for i, (xi, yi) in enumerate(zip(xs, ys, strict=True)):
        num, den = 1, 1
        for j, xj in enumerate(xs):
            if j != i:
                num = num * (-xj) % PRIME
                den = den * (xi - xj) % PRIME
        secret = (secret + yi * num * pow(den, -1, PRIME)) % PRIME
    if secret >= 2**256:
        raise ProtocolAbortError("reconstruction gave no valid secret (inconsistent shares)")
    return secret.to_bytes(32, "big")
