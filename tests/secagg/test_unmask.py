"""Sharded unmasking: every executor gives the sum bit for bit (issue 14)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport, ScheduledDropout
from privfl.errors import ConfigurationError
from privfl.secagg.pairwise import PairwiseSecureSum
from privfl.secagg.prg import PAIR_MASK, SELF_MASK, expand_mask
from privfl.secagg.unmask import MaskOp, Unmasker, UnmaskExecutor, net_mask, shards


def _ops(n: int, seed: int = 0) -> list[MaskOp]:
    rng = np.random.default_rng(seed)
    return [MaskOp(rng.bytes(32), SELF_MASK if i % 3 else PAIR_MASK, bool(i % 2))
            for i in range(n)]


def _reference(acc: np.ndarray, ops: list[MaskOp], round_id: int) -> np.ndarray:
    out = acc.copy()
    for op in ops:  # whole-length keystreams, one after another
        m = expand_mask(op.seed, len(out), out.dtype, purpose=op.purpose, round_id=round_id)
        out = out - m if op.subtract else out + m
    return out


@pytest.mark.parametrize("length", [1, 15, 16, 17, 100_003, 262_144])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_shards_cover_the_vector_at_block_boundaries(length: int, dtype: type) -> None:
    for parts in (1, 2, 3, 7, 64):
        cut = shards(length, np.dtype(dtype).itemsize, parts)
        assert cut[0][0] == 0 and cut[-1][1] == length
        assert all(a[1] == b[0] for a, b in zip(cut, cut[1:], strict=False))
        per_block = 64 // np.dtype(dtype).itemsize
        assert all(lo % per_block == 0 for lo, _ in cut)
        assert len(cut) <= parts


@pytest.mark.parametrize(("executor", "workers"), [
    (UnmaskExecutor.THREADS, 1), (UnmaskExecutor.THREADS, 2), (UnmaskExecutor.THREADS, 5),
    (UnmaskExecutor.PROCESSES, 2)])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_every_local_executor_is_bit_identical(executor: UnmaskExecutor, workers: int,
                                               dtype: type) -> None:
    rng = np.random.default_rng(1)
    acc = rng.integers(0, np.iinfo(dtype).max, 70_001, dtype=dtype, endpoint=True)
    ops = _ops(9)
    want = _reference(acc, ops, round_id=7)
    un = Unmasker(executor, workers)
    try:
        got = acc.copy()
        un.remove(got, ops, 7)
        assert np.array_equal(got, want)
        got2 = acc.copy()
        un.remove(got2, ops, 7)  # the pool is reused
        assert np.array_equal(got2, want)
    finally:
        un.close()


def test_ray_sharded_unmasking_matches_the_single_process_sum() -> None:
    """A local Ray instance with 2 workers: the shards' sum is the one-process sum, bit for bit."""
    ray = pytest.importorskip("ray")
    rng = np.random.default_rng(2)
    acc = rng.integers(0, 2**32, 300_017, dtype=np.uint32)
    ops = _ops(12, seed=3)
    single = acc.copy()
    Unmasker(UnmaskExecutor.THREADS, 1).remove(single, ops, 3)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.cluster_resources().get("CPU", 0) >= 2
        un = Unmasker(UnmaskExecutor.RAY)  # one shard per CPU of the cluster
        sharded = acc.copy()
        un.remove(sharded, ops, 3)
        assert np.array_equal(sharded, single)
        assert np.array_equal(single, _reference(acc, ops, 3))
    finally:
        if started:
            ray.shutdown()


def test_bad_settings_and_tasks_are_refused() -> None:
    with pytest.raises(ConfigurationError):
        Unmasker("threads")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        Unmasker(workers=-1)
    with pytest.raises(ConfigurationError, match="malformed"):
        net_mask(b"x" * 31, b"\x01\x00\x00\x00", b"\x01", 1, 0, 16, "<u4")


@pytest.mark.parametrize("sparse", [False, True])
def test_secure_sum_with_dropouts_is_exact_on_two_threads(sparse: bool) -> None:
    """A whole round (dropped clients' pair masks included) unmasked on 2 threads."""
    n, d = 12, 5000
    spec = ValueSpec(length=d, max_clients=n, max_weight=1.0, linf_bound=1.0, min_clients=1)
    rng = np.random.default_rng(4)
    xs = {c: rng.uniform(-1, 1, d) for c in range(n)}
    sums = []
    for unmasker in (Unmasker(UnmaskExecutor.THREADS, 1), Unmasker(UnmaskExecutor.THREADS, 2)):
        ss = PairwiseSecureSum(sparse=sparse, rounding_seed=9, unmasker=unmasker,
                               dropout_rate=0.3)
        proc = ss.create(spec)
        server = proc.new_round(1, list(range(n)))
        sessions = {c: proc.client_session(c) for c in range(n)}
        out = InMemoryTransport(ScheduledDropout({2: {3, 7}})).run_round(
            server, sessions, {c: Contribution(xs[c], 1.0) for c in range(n)})
        unmasker.close()
        assert set(out.result.contributors) == set(range(n)) - {3, 7}
        sums.append(out.result.weighted_sum)
    assert np.array_equal(sums[0], sums[1])
    plain = sum(xs[c] for c in range(n) if c not in (3, 7))
    assert np.abs(sums[0] - plain).max() < 1e-3


def test_hkdf_is_rfc5869_as_cryptography_computes_it() -> None:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from privfl.secagg.keyagreement import hkdf

    rng = np.random.default_rng(6)
    for n in (0, 1, 32, 77):
        shared, info = rng.bytes(32), rng.bytes(n)
        want = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)
        assert hkdf(shared, info) == want
