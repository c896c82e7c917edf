"""Encrypt large vectors in worker processes (TenSEAL/SEAL hold the GIL).

SEAL's encryption is a single-threaded C++ loop that holds Python's GIL, so threads cannot
overlap them; processes can. A :class:`ChunkPool` starts ``workers`` processes once per client
(``spawn``), gives each the shared master seed through its initializer — inter-process
communication on the client's own machine, not a trust boundary — and splits the chunks of a
vector into contiguous ranges; each worker derives the round's key itself. Results are
byte-identical in layout to the in-process codec. Decryption is not parallelised: shipping the
aggregate to the workers and the coefficients back cost more than the parallel decryption saved
on the 2-core machines this was measured on.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["ChunkPool", "default_workers"]

#: Below this many chunks the process start-up and transfers cost more than they save.
MIN_PARALLEL_CHUNKS = 64

_WORKER: dict[str, Any] = {}


def default_workers() -> int:
    """Usable CPUs (the affinity mask where the OS has one), capped at 8."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS/Windows
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus))


def _init(params: Any, secret: bytes) -> None:
    from privfl.he.codec import SealCodec
    from privfl.he.keys import ClientKeys, seal_context

    _WORKER["keys"] = ClientKeys.from_master(params, secret[:16], secret[16:])
    _WORKER["codec"] = SealCodec(seal_context(params), params)


def _encrypt(coeffs: npt.NDArray[np.uint64], round_id: int) -> tuple[bytes, bytes, bytes, int]:
    key = _WORKER["keys"].round_key(round_id)
    result: tuple[bytes, bytes, bytes, int] = _WORKER["codec"].encrypt(key, coeffs)
    return result


class ChunkPool:
    """A pool of key-holding worker processes for one client."""

    def __init__(self, params: Any, exported_secret: bytes, workers: int) -> None:
        self.workers = workers
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                         initializer=_init, initargs=(params, exported_secret))

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _ranges(self, chunks: int) -> list[tuple[int, int]]:
        step = -(-chunks // self.workers)
        return [(a, min(chunks, a + step)) for a in range(0, chunks, step)]

    def encrypt(self, coeffs: npt.NDArray[np.uint64], round_id: int
                ) -> tuple[bytes, bytes, bytes, int]:
        """Same result layout as :meth:`SealCodec.encrypt`, chunks encrypted in parallel."""
        parts = [self._pool.submit(_encrypt, coeffs[a:b], round_id)
                 for a, b in self._ranges(len(coeffs))]
        results = [p.result() for p in parts]
        return (results[0][0], b"".join(r[1] for r in results), b"".join(r[2] for r in results),
                sum(r[3] for r in results))
