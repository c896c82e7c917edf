"""Secure aggregation cost: privfl's SecAgg+ (and SecAgg, multi-server) against a plain sum.

For n ∈ {10, 50, 100} clients and d ∈ {1e5, 1e6} parameters, with no dropout, 10% of the
clients dropped before upload (after sharing keys: their masks must be removed) and 10% dropped
after upload (during unmasking), it reports the server's time over all stages (decode, validate,
fold, reconstruct, unmask, decode the sum), the median client time over all stages, bytes up and
down per client, and — measured in the same run on the same vectors — a plain FedAvg sum (the
floor). Each stage's replies reach the server back to back (:class:`_Burst`). When ``flwr`` is
importable, Flower's own SecAgg+ (``SecAggPlusWorkflow`` and ``secaggplus_mod``, in process,
see ``_flower_secaggplus.py``) is timed on the same vectors and scenarios with
k = 2⌈log₂ n⌉ + 1; otherwise that part says so and is skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from privfl.core.securesum import PlainSecureSum
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport, LocalClients, ScheduledDropout
from privfl.secagg.multiserver import MultiServerSecureSum
from privfl.secagg.pairwise import PairwiseSecureSum

CONFIG = {"clients": [10, 50, 100], "dims": [100_000, 1_000_000], "drop_fraction": 0.1,
          "mechanisms": ["secagg+", "multiserver", "secagg"], "secagg_max_clients": 50}


class _Timed:
    """Wraps a client session to time its work."""

    def __init__(self, inner: Any, sink: list[float]) -> None:
        self.inner = inner
        self.sink = sink

    def step(self, request: bytes, contribution: Any) -> bytes:
        t = time.perf_counter()
        out: bytes = self.inner.step(request, contribution)
        self.sink.append(time.perf_counter() - t)
        return out


class _TimedServer:
    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.round_id = inner.round_id
        self.seconds = 0.0

    def step(self, replies: Any) -> Any:
        t = time.perf_counter()
        out = self.inner.step(replies)
        self.seconds += time.perf_counter() - t
        return out

    def receive(self, client: int, message: bytes) -> None:
        t = time.perf_counter()
        self.inner.receive(client, message)
        self.seconds += time.perf_counter() - t


class _Burst:
    """Delivers a stage's replies to the server back to back, as a network burst arrives.

    The simulated clients run in this process; handing each reply to the server right after
    its client computed it would make every receive start with caches that the client's
    crypto filled — a cost of the simulation, not of a server whose clients are elsewhere
    (measured at n = 1000: 130 µs against 30 µs per upload). Replies are buffered up to
    ``max_bytes`` and then handed over in order. Flower's server, timed for comparison,
    likewise processes each stage's replies as one list.
    """

    def __init__(self, inner: LocalClients, max_bytes: int) -> None:
        self.inner = inner
        self.max_bytes = max_bytes

    def exchange(self, requests: Sequence[tuple[int, bytes]]) -> Iterator[Any]:
        buffered: list[Any] = []
        size = 0
        for cid, reply in self.inner.exchange(requests):
            buffered.append((cid, reply))
            size += len(reply) if isinstance(reply, bytes) else 0
            if size >= self.max_bytes:
                yield from buffered
                buffered, size = [], 0
        yield from buffered


BURST_BYTES = 256 * 2**20
"""Replies buffered before the server takes them (0: each as soon as its client replies)."""


def _one(secure: Any, values: list[np.ndarray], drops: dict[int, set[int]], *,
         burst_bytes: int = BURST_BYTES) -> dict[str, Any]:
    n, d = len(values), len(values[0])
    proc = secure.create(ValueSpec(length=d, max_clients=n, linf_bound=1.0))
    server = _TimedServer(proc.new_round(1, list(range(n))))
    per_client: dict[int, list[float]] = {c: [] for c in range(n)}
    sessions = {c: _Timed(proc.client_session(c), per_client[c]) for c in range(n)}
    contributions = {c: Contribution(values[c], 1.0) for c in range(n)}

    def handler(c: int) -> Any:
        return lambda request: sessions[c].step(request, contributions[c])

    pool = LocalClients({c: handler(c) for c in range(n)})
    out = InMemoryTransport(ScheduledDropout(drops)).run(
        server, _Burst(pool, burst_bytes) if burst_bytes > 0 else pool)
    ref = np.sum([values[c].astype(np.float64) for c in out.result.contributors], axis=0)
    return {"server_s": server.seconds,
            "client_s_median": statistics.median(sum(v) for v in per_client.values() if v),
            "bytes_up_per_client": out.bytes_up / n, "bytes_down_per_client": out.bytes_down / n,
            "upload_bytes_per_param": out.bytes_up / n / d,
            "max_abs_error": float(np.abs(out.result.weighted_sum - ref).max()),
            "contributors": len(out.result.contributors)}


_FLOWER_STAGE = {"before_upload": "collect_masked_vectors", "after_upload": "unmask"}


def _flower(values: list[np.ndarray], victims: set[int], plain_s: float) -> dict[str, Any]:
    if importlib.util.find_spec("flwr") is None:
        return {"skipped": "flwr is not installed"}
    import logging

    from ._flower_secaggplus import run_flower_secaggplus

    logging.getLogger("flwr").setLevel(logging.ERROR)
    n = len(values)
    k = 2 * math.ceil(math.log2(n)) + 1
    out: dict[str, Any] = {"num_shares": k}
    for name in ("none", "before_upload", "after_upload"):
        nodes = {v + 1 for v in victims} if name != "none" else set()
        r = run_flower_secaggplus(values, k, nodes, _FLOWER_STAGE.get(name, ""))
        r["server_vs_plain"] = r["server_s"] / plain_s
        out[name] = r
        print(f"n={n:3d} d={len(values[0]):>9,d} flower-secagg+ drop={name:13s} server "
              f"{r['server_s']:7.3f} s (x{r['server_vs_plain']:5.1f} plain)  client "
              f"{r['client_s_median']:.3f} s")
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(CONFIG)
    if args.quick:
        cfg.update(clients=[10], dims=[100_000])
    rng = np.random.default_rng(0)
    results = []
    for n in cfg["clients"]:
        for d in cfg["dims"]:
            values = [rng.uniform(-1, 1, d).astype(np.float32) for _ in range(n)]
            k = max(1, round(cfg["drop_fraction"] * n))
            victims = set(range(1, 1 + k))
            scenarios = {"none": {}, "before_upload": {2: victims}, "after_upload": {3: victims}}
            plain = _one(PlainSecureSum(), values, {})
            row: dict[str, Any] = {"clients": n, "dim": d, "plain": plain}
            for mech in cfg["mechanisms"]:
                if mech == "secagg" and n > cfg["secagg_max_clients"]:
                    continue
                secure: Any = (MultiServerSecureSum(2) if mech == "multiserver"
                               else PairwiseSecureSum(sparse=mech == "secagg+"))
                row[mech] = {}
                for name, drops in scenarios.items():
                    if mech == "multiserver" and name == "after_upload":
                        continue  # one exchange: there is no stage after the upload
                    if mech == "multiserver":
                        drops = {0: victims} if drops else {}
                    r = _one(secure, values, drops)
                    r["server_vs_plain"] = r["server_s"] / plain["server_s"]
                    row[mech][name] = r
                    print(f"n={n:3d} d={d:>9,d} {mech:11s} drop={name:13s} server "
                          f"{r['server_s']:7.3f} s (x{r['server_vs_plain']:5.1f} plain "
                          f"{plain['server_s']:.3f} s)  client {r['client_s_median']:.3f} s  "
                          f"up {r['upload_bytes_per_param']:.3f} B/param  "
                          f"err {r['max_abs_error']:.1e}")
            row["flower_secaggplus"] = _flower(values, victims, plain["server_s"])
            if "secagg+" in row and "skipped" not in row["flower_secaggplus"]:
                fl = row["flower_secaggplus"]
                row["privfl_speedup_over_flower"] = {
                    name: {"server": fl[name]["server_s"] / row["secagg+"][name]["server_s"],
                           "client": fl[name]["client_s_median"]
                           / row["secagg+"][name]["client_s_median"]}
                    for name in ("none", "before_upload", "after_upload")}
            results.append(row)
    if "skipped" in results[0]["flower_secaggplus"]:
        print(f"Flower SecAgg+: skipped ({results[0]['flower_secaggplus']['skipped']})")
    return {"config": cfg, "results": results}
