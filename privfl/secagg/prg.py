"""Mask expansion: a 256-bit secret → a uniform vector over Z_{2^b} (ChaCha20 keystream).

The keystream of ChaCha20 (RFC 8439) under a uniformly random 256-bit key is indistinguishable
from uniform bytes, so its b-bit words are uniform over Z_{2^b} with no modulo bias (2^b divides
2^(8·bytes)). The 128-bit nonce binds the stream to its purpose and round, so one secret never
produces the same stream twice. Compare Flower's SecAgg+ (flwr 1.42), which folds seeds into 32
bits and expands them with MT19937 — both broken; see the research notes.

Expansion writes into a caller-provided buffer (about 1 ms per 4 MB here): masks are hot.
"""

from __future__ import annotations

import struct

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

__all__ = ["PAIR_MASK", "SELF_MASK", "expand_mask", "mask_nonce"]

SELF_MASK = 1
PAIR_MASK = 2
_ZEROS: dict[int, bytes] = {}


def mask_nonce(purpose: int, round_id: int, start_block: int = 0) -> bytes:
    """16-byte ChaCha20 nonce: block counter (0 unless seeking), purpose, round."""
    return struct.pack("<IIQ", start_block, purpose, round_id)


def _zeros(n: int) -> bytes:
    """``n`` zero bytes (cached: the keystream is XORed onto them)."""
    if n not in _ZEROS:
        if len(_ZEROS) > 8:
            _ZEROS.clear()
        _ZEROS[n] = bytes(n)
    return _ZEROS[n]


def expand_mask(secret: bytes, length: int, dtype: np.dtype[np.unsignedinteger], *,
                purpose: int, round_id: int,
                out: npt.NDArray[np.unsignedinteger] | None = None, start_block: int = 0
                ) -> npt.NDArray[np.unsignedinteger]:
    """``length`` uniform words of ``dtype`` from a 32-byte secret (into ``out`` if given).

    ``start_block`` seeks: the words then begin at byte 64·start_block of the mask's
    keystream (ChaCha20's block counter), so a coordinate range can be expanded on its own.
    """
    if len(secret) != 32:
        raise ValueError("mask secrets must be 32 bytes")
    dt = np.dtype(dtype).newbyteorder("<")
    if out is None:
        out = np.empty(length, dtype=dt)
    if out.shape != (length,) or out.dtype.itemsize != dt.itemsize or not out.flags.c_contiguous:
        raise ValueError("`out` must be a contiguous vector of the right length and width")
    nbytes = length * dt.itemsize
    enc = Cipher(algorithms.ChaCha20(secret, mask_nonce(purpose, round_id, start_block)),
                 mode=None).encryptor()
    enc.update_into(_zeros(nbytes), out.view(np.uint8).data)
    return out
