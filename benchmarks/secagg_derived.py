"""SecAgg+ at the parameters its guarantee needs: server against the floor, on 1 and all cores.

For each case — (γ, δ) ∈ {(1/3, 0.2), (0.05, 0.05)}, n ∈ {100, 1000}, d ∈ {10⁵, 10⁶}, k and t
from :func:`~privfl.secagg.params.find_params` — one round with 10% of the clients dropped
before the masked upload (after sharing keys: their masks must be removed). Reported: the
server's seconds over all stages with one unmasking thread and with every core, the median
client's seconds, bytes up and down per client, the peak memory traced during the round
(tracemalloc, numpy included, all roles in one process: the server's state, the transport's
buffered replies of one stage and one client's transient buffers; a second, traced round,
skipped where n·d > 10⁸), and the
**floor**: the work no implementation can avoid — expanding and subtracting one ChaCha20 mask
of d words per survivor and per (dropped client, surviving neighbour) pair, plus one X25519
agreement per such pair — timed with the same primitives, on one core, in the same run. A
plain sum of the same vectors is the baseline.

Server time on all cores: the round's parallel part — Shamir reconstruction, the pair agreements
of dropped clients and the unmasking (:class:`~privfl.secagg.unmask.Unmasker`; pure functions
of the round's shares, seeds and masked sum) — runs on the same inputs with one thread and with
the default ``AUTO`` executor on every core (in-line below 2²⁸ keystream words, else a pool of
worker processes, started before the round as a long-running server keeps it); each variant's
time is added to the rest of the server's work, which is identical. Flower 1.41's SecAgg+ runs
at the same k and t (num_shares = k + 1, its reconstruction threshold t) where ``flwr`` is
installed, at n = 100, d = 10⁵ (its server takes over a minute there).

Medians of 3 rounds per case (1 where n·d > 10⁸).

    python -m benchmarks.run secagg_derived            # every case (about 30 minutes, 2 cores)
    python -m benchmarks.run secagg_derived --quick    # n = 100, d = 10⁵, both (γ, δ)
    python -m benchmarks.run secagg_derived --clients 1000 --dims 100000   # one (n, d)
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import time
import tracemalloc
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privfl.core.securesum import PlainSecureSum
from privfl.secagg.pairwise import PairwiseSecureSum, _pair_seed_batches
from privfl.secagg.params import find_params
from privfl.secagg.prg import PAIR_MASK, expand_mask
from privfl.secagg.unmask import MaskOp, Unmasker, UnmaskExecutor

from .secagg import _one

CONFIG: dict[str, Any] = {
    "fractions": [(1 / 3, 0.2), (0.05, 0.05)], "clients": [100, 1000],
    "dims": [100_000, 1_000_000], "drop_fraction": 0.1, "flower": [(100, 100_000)],
    # the traced second round of n = 1000, d = 10⁶ would take another 8 minutes per case
    "peak_max_nd": 10**8, "repeats": 3, "no_peak": False}


class _Recording(Unmasker):
    """The round's parallelisable work (pair agreements, unmasking) on one core and on all.

    Each call runs the same pure function of the same inputs twice — with one thread, and with
    the default ``AUTO`` executor on all cores (inline for a small round, else a warm pool of
    one worker process per core, started before the round) — checks that the results are
    identical, and records both times and the wrapper's own overhead, so that the server's time
    can be stated for either configuration.
    """

    def __init__(self, cores: int) -> None:
        super().__init__(UnmaskExecutor.THREADS, 1)
        self.cores = Unmasker(UnmaskExecutor.AUTO, cores)  # what a server gets by default
        self.cores.warm_up()
        self.times = {"one_core": 0.0, "all_cores": 0.0, "wrapper": 0.0}
        self.ops: list[MaskOp] = []
        self.agreements = 0

    def map_chunks(self, fn: Any, items: list[Any], weight: int) -> list[Any]:
        t0 = time.perf_counter()
        many = self.cores.map_chunks(fn, items, weight)
        t1 = time.perf_counter()
        one = super().map_chunks(fn, items, weight)
        t2 = time.perf_counter()
        if many != one:
            raise AssertionError("parallel agreements differ from the one-core result")
        if fn is _pair_seed_batches:  # one seed per (dropped client, neighbour) agreement
            self.agreements += len(one)
        self.times["all_cores"] += t1 - t0
        self.times["one_core"] += t2 - t1
        self.times["wrapper"] += time.perf_counter() - t0
        return one

    def remove(self, acc: np.ndarray, ops: Any, round_id: int) -> None:
        t0 = time.perf_counter()
        copy = acc.copy()
        t1 = time.perf_counter()
        self.cores.remove(copy, ops, round_id)
        t2 = time.perf_counter()
        super().remove(acc, ops, round_id)
        t3 = time.perf_counter()
        if not np.array_equal(copy, acc):
            raise AssertionError("sharded unmasking differs from the one-thread result")
        self.ops = list(ops)
        self.times["all_cores"] += t2 - t1
        self.times["one_core"] += t3 - t2
        self.times["wrapper"] += time.perf_counter() - t0


def _floor(ops: list[MaskOp], d: int, agreements: int) -> dict[str, float]:
    """The unavoidable work, on one core: every mask expanded and subtracted, every agreement."""
    acc = np.zeros(d, dtype=np.uint32)
    scratch = np.empty_like(acc)
    t = time.perf_counter()
    for op in ops:
        expand_mask(op.seed, d, acc.dtype, purpose=PAIR_MASK, round_id=1, out=scratch)
        np.subtract(acc, scratch, out=acc)
    masks = time.perf_counter() - t
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    t = time.perf_counter()
    for _ in range(agreements):
        a.exchange(b)
    ecdh = time.perf_counter() - t
    return {"masks_s": masks, "agreements_s": ecdh, "floor_s": masks + ecdh,
            "masks": len(ops), "agreements": agreements}


def _peak(secure: Any, values: list[np.ndarray], drops: dict[int, set[int]]) -> float:
    tracemalloc.start()
    try:
        _one(secure, values, drops, burst_bytes=0)  # the server's own state, not a burst
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def _flower(values: list[np.ndarray], k: int, t: int, victims: set[int]) -> dict[str, Any]:
    if importlib.util.find_spec("flwr") is None:
        return {"skipped": "flwr is not installed"}
    import logging

    from ._flower_secaggplus import run_flower_secaggplus

    logging.getLogger("flwr").setLevel(logging.ERROR)
    r = run_flower_secaggplus(values, k + 1, {v + 1 for v in victims},
                              "collect_masked_vectors", threshold=t)
    return {"server_s": r["server_s"], "client_s_median": r["client_s_median"],
            "num_shares": k + 1, "threshold": t}


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(CONFIG)
    if args.quick:
        cfg.update(clients=[100], dims=[100_000])
    for key in ("clients", "dims"):  # one case of the suite, e.g. --clients 1000 --dims 100000
        if getattr(args, key, None):
            cfg[key] = list(getattr(args, key))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    results = []
    for n in cfg["clients"]:
        for d in cfg["dims"]:
            values = [rng.uniform(-1, 1, d).astype(np.float32) for _ in range(n)]
            victims = set(range(1, 1 + max(1, round(cfg["drop_fraction"] * n))))
            plain = _one(PlainSecureSum(), values, {})
            for gamma, delta in cfg["fractions"]:
                params = find_params(n, collusion=gamma, dropout=delta)
                repeats = 1 if n * d > cfg["peak_max_nd"] else cfg["repeats"]
                trials = []
                for _ in range(repeats):
                    rec = _Recording(cores)
                    secure = PairwiseSecureSum(sparse=True, collusion_fraction=gamma,
                                               dropout_rate=delta, unmasker=rec)
                    r = _one(secure, values, {2: victims})
                    rec.cores.close()
                    floor = _floor(rec.ops, d, rec.agreements)
                    base = r["server_s"] - rec.times["wrapper"]  # the server without the wrapper
                    r["server_s"] = base + rec.times["one_core"]
                    r["server_all"] = base + rec.times["all_cores"]
                    r["floor"] = floor
                    r["times"] = dict(rec.times)
                    trials.append(r)
                # the median trial by single-core server time; ratios are medians of each trial's
                trials.sort(key=lambda x: x["server_s"])
                r = trials[len(trials) // 2]
                floor, server_all = r["floor"], r["server_all"]
                rec_times = r["times"]
                vs_floor = statistics.median(x["server_s"] / x["floor"]["floor_s"] for x in trials)
                speedup = statistics.median(x["server_s"] / x["server_all"] for x in trials)
                row: dict[str, Any] = {
                    "clients": n, "dim": d, "collusion": gamma, "dropout": delta,
                    "k": params.degree, "t": params.threshold, "dropped": len(victims),
                    "server_s_one_core": r["server_s"], "server_s_all_cores": server_all,
                    "cores": cores, "parallel_part_s": rec_times, "repeats": repeats,
                    "client_s_median": r["client_s_median"],
                    "bytes_up_per_client": r["bytes_up_per_client"],
                    "bytes_down_per_client": r["bytes_down_per_client"],
                    "max_abs_error": r["max_abs_error"], "floor": floor,
                    "server_vs_floor": vs_floor, "all_cores_speedup": speedup,
                    "plain_server_s": plain["server_s"],
                    "server_vs_plain": r["server_s"] / plain["server_s"]}
                row["peak_traced_mib"] = None if cfg.get("no_peak") else _peak(
                    PairwiseSecureSum(sparse=True, collusion_fraction=gamma, dropout_rate=delta,
                                      unmasker=Unmasker(UnmaskExecutor.THREADS, 1)),
                    values, {2: victims}) if n * d <= cfg["peak_max_nd"] else None
                if (n, d) in [tuple(c) for c in cfg["flower"]] and gamma > 0.1:
                    fl = _flower(values, params.degree, params.threshold, victims)
                    row["flower_secaggplus"] = fl
                    if "server_s" in fl:
                        row["privfl_speedup_over_flower"] = fl["server_s"] / r["server_s"]
                print(f"n={n:4d} d={d:>9,d} γ={gamma:.3g} δ={delta:.3g} k={params.degree:3d} "
                      f"t={params.threshold:3d}  server {r['server_s']:7.3f} s "
                      f"(x{row['server_vs_floor']:.2f} floor {floor['floor_s']:.3f} s; all "
                      f"{cores} cores {server_all:.3f} s, x{row['all_cores_speedup']:.2f})  "
                      f"client {r['client_s_median']:.3f} s  up "
                      f"{r['bytes_up_per_client'] / 1e6:.2f} MB  peak "
                      + (f"{row['peak_traced_mib']:.0f} MiB" if row["peak_traced_mib"]
                         else "not traced")
                      + (f"  Flower x{row['privfl_speedup_over_flower']:.0f} slower"
                         if "privfl_speedup_over_flower" in row else ""))
                results.append(row)
    return {"config": cfg, "results": results}
