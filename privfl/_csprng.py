"""A cryptographically secure random source: ChaCha20 keyed with 256 bits from the OS (internal).

Used wherever randomness protects privacy or secrecy in production (DP noise, masks, shares,
and the subsampling that privacy amplification relies on: which clients take part in a round,
which examples are in a DP-SGD batch): the keystream of ChaCha20 (RFC 8439, from
``cryptography``) is indistinguishable from uniform bytes without the key, and the key never
leaves the process. Simulations pass a seeded ``numpy.random.Generator`` instead; anyone who
knows its seed can replay every draw, so a guarantee that rests on it holds only against parties
who do not. :class:`SecureRandom` offers the few ``Generator`` methods privfl draws from
(:meth:`~SecureRandom.random`, :meth:`~SecureRandom.choice`, :meth:`~SecureRandom.integers`),
so either can be passed where a :data:`RandomSource` is expected.

Gaussian samples use the Box–Muller transform on 53-bit uniforms in (0, 1). A continuous
Gaussian sampled in floating point is open to the floating-point attack of Mironov (CCS 2012);
:meth:`SecureRandom.normal` with ``mitigate=True`` averages 2n = 4 draws as proposed in
Holohan & Braghin (arXiv 2107.10138, §5.1), the mitigation Opacus uses in ``secure_mode``.
"""

from __future__ import annotations

import os
from typing import Protocol

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["RandomSource", "SecureRandom"]


class RandomSource(Protocol):
    """What privfl draws from: a seeded ``numpy.random.Generator`` or a :class:`SecureRandom`."""

    def random(self, size: int) -> npt.NDArray[np.float64]:
        """``size`` uniforms in [0, 1)."""
        ...

    def choice(self, a: int, size: int, replace: bool = True) -> npt.NDArray[np.int64]:
        """``size`` draws from ``range(a)``."""
        ...


class SecureRandom:
    """ChaCha20 keystream as a random source; the key never leaves the object."""

    __slots__ = ("_enc",)

    def __init__(self, key: bytes | None = None) -> None:
        """Key from ``os.urandom(32)`` unless one is given (tests, derived streams)."""
        key = os.urandom(32) if key is None else key
        if len(key) != 32:
            raise ValueError("SecureRandom needs a 32-byte key.")
        self._enc = Cipher(algorithms.ChaCha20(key, b"\x00" * 16), mode=None).encryptor()

    def __reduce__(self) -> str | tuple[object, ...]:
        raise TypeError("SecureRandom holds a secret key and cannot be pickled.")

    def bytes(self, n: int) -> bytes:
        """``n`` keystream bytes."""
        return self._enc.update(b"\x00" * n)

    def uint64(self, size: int) -> npt.NDArray[np.uint64]:
        """``size`` uniform 64-bit words."""
        return np.frombuffer(self.bytes(8 * size), dtype="<u8").astype(np.uint64)

    def uniform(self, size: int) -> npt.NDArray[np.float64]:
        """``size`` uniforms in the open interval (0, 1), 53 bits each."""
        return ((self.uint64(size) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53

    def random(self, size: int) -> npt.NDArray[np.float64]:
        """``size`` uniforms in [0, 1) on the 2⁻⁵³ grid (``Generator.random``'s contract)."""
        return (self.uint64(size) >> np.uint64(11)).astype(np.float64) * 2.0**-53

    def integers(self, high: int) -> int:
        """One uniform integer in [0, high), without modulo bias (rejection sampling)."""
        if high < 1:
            raise ValueError("`high` must be >= 1.")
        bits = max(1, (high - 1).bit_length())
        while True:
            v = int.from_bytes(self.bytes((bits + 7) // 8), "little") & ((1 << bits) - 1)
            if v < high:
                return v

    def choice(self, a: int, size: int, replace: bool = True) -> npt.NDArray[np.int64]:
        """``size`` uniform draws from ``range(a)``.

        Without replacement: a uniform subset in random order (partial Fisher–Yates shuffle).
        """
        if replace:
            return np.array([self.integers(a) for _ in range(size)], dtype=np.int64)
        if size > a:
            raise ValueError("cannot take more elements than there are without replacement")
        pool = np.arange(a, dtype=np.int64)
        for i in range(size):
            j = i + self.integers(a - i)
            pool[i], pool[j] = pool[j], pool[i]
        return pool[:size].copy()

    def normal(self, size: int, std: float = 1.0, *,
               mitigate: bool = True) -> npt.NDArray[np.float64]:
        """``size`` draws of N(0, std²); ``mitigate`` averages 4 draws (see module docstring)."""
        reps = 4 if mitigate else 1
        m = (size * reps + 1) // 2
        u1, u2 = self.uniform(m), self.uniform(m)
        r = np.sqrt(-2.0 * np.log(u1))
        z = np.concatenate([r * np.cos(2 * np.pi * u2), r * np.sin(2 * np.pi * u2)])
        z = z[: size * reps].reshape(reps, size).sum(axis=0) / np.sqrt(reps)
        out: npt.NDArray[np.float64] = std * z
        return out
