"""Removing masks from a masked sum, on every core or over Ray tasks, with identical results.

The server of pairwise masking ends each round by subtracting (or adding) one ChaCha20 mask per
surviving client (its self mask) and per (dropped client, surviving neighbour) pair, each a
keystream of d ring words. ChaCha20 is seekable — its 32-bit block counter is the first word of
the 16-byte nonce — so the words [lo, hi) of a mask are the keystream from block lo·w/64 on
(w the word size). The coordinates therefore split into shards whose boundaries are multiples
of one block, each shard is unmasked independently, and because ring arithmetic is exact
(addition modulo 2^b is associative and commutative) the result is bit-identical whichever
executor ran which shard, in whatever order.

Executors (:class:`UnmaskExecutor`):

* ``AUTO`` (default) — in this thread for small rounds, worker processes for large ones.
* ``THREADS`` — shards on threads of this process, writing into disjoint slices of the sum.
  OpenSSL's ChaCha20 and numpy's ring addition release the GIL, so threads scale with cores
  without copying the sum.
* ``PROCESSES`` — shards in a pool of worker processes (started once and reused); each returns
  its shard's net mask. For platforms where threads do not scale.
* ``RAY`` — shards as Ray tasks on a Ray cluster (``address``), for a server whose round
  outgrows one machine: each task receives the seeds of the round (32 bytes per mask) and
  returns its shard's net mask.

Threat model: the seeds are the reconstructed secrets of the round — what the server learns
anyway by the protocol (self-mask seeds of survivors, pair seeds of dropped clients). They go to
the server's own threads, processes or Ray workers, which are part of the server: a cluster
that runs them is trusted as the server is. No client secret that the protocol keeps from the
server is ever involved.
"""

from __future__ import annotations

import enum
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from privfl.errors import ConfigurationError
from privfl.secagg.prg import expand_mask

__all__ = ["AUTO_PROCESSES_WORDS", "MaskOp", "UnmaskExecutor", "Unmasker", "net_mask", "shards"]

_BLOCK = 64  # ChaCha20 block bytes
AUTO_PROCESSES_WORDS = 1 << 28
"""Keystream words (masks × length) above which ``AUTO`` unmasks in worker processes:
about 0.3 s of ChaCha20 on one core, well above a process pool's dispatch cost."""
_MIN_SHARD_WORDS = 1 << 14  # below this a shard costs more to dispatch than to compute


@dataclass(frozen=True, slots=True)
class MaskOp:
    """One mask to remove: ``acc −= PRG(seed)`` (or ``+=`` when ``subtract`` is false)."""

    seed: bytes
    purpose: int
    subtract: bool


class UnmaskExecutor(enum.Enum):
    """Where the shards of a round's unmasking run."""

    AUTO = "auto"
    """In this thread for a small round; worker processes once a round's keystream exceeds
    :data:`AUTO_PROCESSES_WORDS` words (their pool starts once and is reused)."""
    THREADS = "threads"
    PROCESSES = "processes"
    RAY = "ray"


def shards(length: int, itemsize: int, parts: int) -> list[tuple[int, int]]:
    """``parts`` (or fewer) contiguous ranges covering [0, length), cut at block boundaries."""
    per_block = _BLOCK // itemsize
    blocks = -(-length // per_block)
    parts = max(1, min(parts, blocks, -(-length // _MIN_SHARD_WORDS)))
    edges = [round(i * blocks / parts) * per_block for i in range(parts + 1)]
    edges[-1] = length
    return [(lo, min(hi, length)) for lo, hi in zip(edges, edges[1:], strict=False) if lo < hi]


def _apply(target: npt.NDArray[Any], ops: Sequence[MaskOp], round_id: int, lo: int,
           scratch: npt.NDArray[Any]) -> None:
    """Subtract (or add) every mask from ``target``, the words [lo, lo + len) of the sum."""
    start_block = lo * target.dtype.itemsize // _BLOCK
    for op in ops:
        expand_mask(op.seed, len(scratch), scratch.dtype, purpose=op.purpose,
                    round_id=round_id, out=scratch, start_block=start_block)
        if op.subtract:
            np.subtract(target, scratch, out=target)
        else:
            np.add(target, scratch, out=target)


def net_mask(seeds: bytes, purposes: bytes, signs: bytes, round_id: int, lo: int, hi: int,
             dtype: str) -> bytes:
    """The shard [lo, hi) of −Σ(±masks), as bytes (what a worker process or Ray task returns).

    Arguments are plain bytes and strings so that they cross process boundaries as data.
    """
    n = len(signs)
    if len(seeds) != 32 * n or len(purposes) != 4 * n or not 0 <= lo <= hi:
        raise ConfigurationError("malformed unmasking task")
    pur = np.frombuffer(purposes, dtype="<u4")
    ops = [MaskOp(seeds[32 * i:32 * i + 32], int(pur[i]), bool(signs[i])) for i in range(n)]
    target = np.zeros(hi - lo, dtype=np.dtype(dtype))
    _apply(target, ops, round_id, lo, np.empty_like(target))
    return target.tobytes()


def _import_all(modules: tuple[str, ...]) -> int:
    import importlib

    for name in modules:
        importlib.import_module(name)
    return os.getpid()


def _pack(ops: Sequence[MaskOp]) -> tuple[bytes, bytes, bytes]:
    return (b"".join(op.seed for op in ops),
            np.array([op.purpose for op in ops], dtype="<u4").tobytes(),
            bytes(int(op.subtract) for op in ops))


@dataclass
class Unmasker:
    """Removes a round's masks from the masked sum, sharded over ``workers``.

    Args:
        executor: Automatic (default), threads, worker processes or Ray tasks.
        workers: Shards per round (0: one per core of this machine; with Ray, one per CPU of
            the cluster).
        address: Ray cluster address (``None``: the running or a new local instance).
    """

    executor: UnmaskExecutor = UnmaskExecutor.AUTO
    workers: int = 0
    address: str | None = None
    _pool: Executor | None = field(default=None, init=False, repr=False)
    _ray: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.executor, UnmaskExecutor):
            raise ConfigurationError(
                f"`executor` must be an UnmaskExecutor. Found {self.executor!r}.")
        if not isinstance(self.workers, int) or self.workers < 0:
            raise ConfigurationError(f"`workers` must be an int >= 0. Found {self.workers!r}.")

    def __getstate__(self) -> dict[str, Any]:
        """Settings only (a pool or Ray handle stays in its process)."""
        return {"executor": self.executor, "workers": self.workers, "address": self.address,
                "_pool": None, "_ray": None}

    def _parts(self) -> int:
        if self.workers:
            return self.workers
        if self.executor is UnmaskExecutor.RAY:
            return max(1, int(self._ray_module().cluster_resources().get("CPU", 1)))
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
            os.cpu_count() or 1)

    def _ray_module(self) -> Any:
        if self._ray is None:
            import ray

            os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
            if not ray.is_initialized():
                ray.init(address=self.address, include_dashboard=False, log_to_driver=False,
                         num_cpus=None if self.address else (self.workers or None))
            self._ray = ray
        return self._ray

    def _mode(self, words: int) -> UnmaskExecutor | None:
        """The executor for ``words`` of keystream; ``None``: inline, in this thread."""
        if self.executor is UnmaskExecutor.AUTO:
            if words < AUTO_PROCESSES_WORDS or self._parts() == 1:
                return None
            return UnmaskExecutor.PROCESSES
        return self.executor

    def _process_pool(self) -> Executor:
        if not isinstance(self._pool, ProcessPoolExecutor):
            import multiprocessing as mp

            if self._pool is not None:
                self._pool.shutdown()
            self._pool = ProcessPoolExecutor(max(1, self._parts()),
                                             mp_context=mp.get_context("spawn"))
        return self._pool

    def warm_up(self, modules: Sequence[str] = ("privfl.secagg.pairwise",)) -> None:
        """Start the worker pool now and import ``modules`` in every worker.

        A pool otherwise starts, and its workers import privfl, with the first large round.
        """
        if self.executor in (UnmaskExecutor.AUTO, UnmaskExecutor.PROCESSES) and \
                self._parts() > 1:
            pool = self._process_pool()
            list(pool.map(_import_all, [tuple(modules)] * self._parts()))

    def map_chunks(self, fn: Callable[[list[Any]], list[Any]], items: list[Any],
                   weight: int) -> list[Any]:
        """``fn`` over ``items`` cut into one chunk per worker, concatenated in order.

        ``fn`` must be a module-level function (it may run in another process) and its
        results data. ``weight`` is the work in keystream-word equivalents, for ``AUTO``.
        """
        mode = self._mode(weight)
        # threads would not help here: X25519 and the interpolation hold the GIL
        if mode is None or mode is UnmaskExecutor.THREADS or len(items) < 2:
            return fn(items)
        parts = max(1, min(self._parts(), len(items)))
        edges = [round(i * len(items) / parts) for i in range(parts + 1)]
        chunks = [items[a:b] for a, b in zip(edges, edges[1:], strict=False)]
        if mode is UnmaskExecutor.PROCESSES:
            outs = list(self._process_pool().map(fn, chunks))
        else:
            ray = self._ray_module()
            task = ray.remote(num_cpus=1)(fn)
            outs = ray.get([task.remote(c) for c in chunks])
        return [x for out in outs for x in out]

    def remove(self, acc: npt.NDArray[Any], ops: Sequence[MaskOp], round_id: int) -> None:
        """Remove every mask of ``ops`` from ``acc`` in place, bit-identical for any executor."""
        mode = self._mode(len(acc) * len(ops))
        parts = shards(len(acc), acc.dtype.itemsize, self._parts())
        if mode is None or (len(parts) == 1 and mode is UnmaskExecutor.THREADS):
            _apply(acc, ops, round_id, 0, np.empty_like(acc))
            return
        if mode is UnmaskExecutor.THREADS:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max(1, self._parts()),
                                                thread_name_prefix="privfl-unmask")
            futures = [self._pool.submit(_apply, acc[lo:hi], ops, round_id, lo,
                                         np.empty(hi - lo, acc.dtype)) for lo, hi in parts]
            for f in futures:
                f.result()
            return
        seeds, purposes, signs = _pack(ops)
        dtype = acc.dtype.str
        if mode is UnmaskExecutor.PROCESSES:
            pool = self._process_pool()
            results = [pool.submit(net_mask, seeds, purposes, signs, round_id, lo, hi, dtype)
                       for lo, hi in parts]
            outs = [f.result() for f in results]
        else:
            ray = self._ray_module()
            task = ray.remote(num_cpus=1)(net_mask)
            refs = [ray.put(b) for b in (seeds, purposes, signs)]
            outs = ray.get([task.remote(*refs, round_id, lo, hi, dtype) for lo, hi in parts])
        for (lo, hi), raw in zip(parts, outs, strict=True):
            np.add(acc[lo:hi], np.frombuffer(raw, dtype=acc.dtype), out=acc[lo:hi])

    def close(self) -> None:
        """Stop a thread or process pool (a Ray instance is left to its owner)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
