"""Encrypt large vectors in worker processes (TenSEAL/SEAL hold the GIL).

SEAL's encryption is a single-threaded C++ loops that hold Python's GIL, so threads
cannot overlap them; processes can. A :class:`ChunkPool` starts ``workers`` processes once per
client (``spawn``), gives each the secret key through its initializer — inter-process
communication on the client's own machine, not a trust boundary — and splits the chunks of a
vector into contiguous ranges. Results are byte-identical in layout to the in-process codec.
Decryption is not parallelised: shipping the aggregate to the workers and the floats back cost
more than the parallel decryption saved on the 2-core machines this was measured on.
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
    import tenseal.sealapi as sa

    from privfl.he.codec import SealCodec
    from privfl.he.keys import seal_context, shm_path

    sctx = seal_context(params)
    path = shm_path("sk")
    try:
        path.write_bytes(secret)
        sk = sa.SecretKey()
        sk.load(sctx, str(path))
    finally:
        path.unlink(missing_ok=True)
    _WORKER["codec"] = SealCodec(sctx, params, sk)


def _encrypt(x: npt.NDArray[np.float64]) -> tuple[bytes, bytes, bytes, int]:
    result: tuple[bytes, bytes, bytes, int] = _WORKER["codec"].encrypt(x)
    return result


class ChunkPool:
    """A pool of key-holding worker processes for one client."""

    def __init__(self, params: Any, secret_key_bytes: bytes, workers: int) -> None:
        self.workers = workers
        self.n = params.poly_modulus_degree
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                         initializer=_init, initargs=(params, secret_key_bytes))

    def close(self) -> None:
        """Stop the workers."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _ranges(self, chunks: int) -> list[tuple[int, int]]:
        step = -(-chunks // self.workers)
        return [(a, min(chunks, a + step)) for a in range(0, chunks, step)]

    def encrypt(self, x: npt.NDArray[np.float64]) -> tuple[bytes, bytes, bytes, int]:
        """Same result layout as :meth:`SealCodec.encrypt`, chunks encrypted in parallel."""
        chunks = max(1, -(-len(x) // self.n))
        parts = [self._pool.submit(_encrypt, x[a * self.n : b * self.n])
                 for a, b in self._ranges(chunks)]
        results = [p.result() for p in parts]
        return (results[0][0], b"".join(r[1] for r in results), b"".join(r[2] for r in results),
                sum(r[3] for r in results))
