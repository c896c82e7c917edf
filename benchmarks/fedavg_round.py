"""One plain FedAvg round on the server: decode n uploads, fold them into the running sum,
average, apply the server optimizer.

For n ∈ {10, 100} clients and d ∈ {1e5, 1e6} parameters it reports the median server time per
round and the peak server memory (tracemalloc, in a separate untimed pass), and, measured in the
same run, the floor: numpy adding the same n float32 vectors already in memory.
"""

from __future__ import annotations

import argparse
import tracemalloc
from typing import Any

import numpy as np

from privfl.core.securesum import PlainSecureSum
from privfl.core.server_opt import FedAvgServer
from privfl.core.spec import Contribution, SumResult, ValueSpec

from ._stamp import median_time

CONFIG = {"clients": [10, 100], "dims": [100_000, 1_000_000], "repeats": 5}


def _case(n: int, d: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    process = PlainSecureSum().create(ValueSpec(length=d, max_clients=n))
    clients = list(range(n))
    vectors = [rng.standard_normal(d, dtype=np.float32) for _ in clients]
    probe = process.new_round(1, clients)
    requests = probe.step(())
    assert isinstance(requests, dict)
    uploads = {c: process.client_session(c).step(requests[c], Contribution(vectors[c], 1.0))
               for c in clients}
    theta = np.zeros(d, np.float32)

    def server_round() -> np.ndarray:
        server = process.new_round(1, clients)
        server.step(())
        for c in clients:
            server.receive(c, uploads[c])
        result = server.step(())
        assert isinstance(result, SumResult)
        return FedAvgServer(1.0).step(theta, result.mean())

    def floor() -> np.ndarray:
        acc = np.zeros(d, np.float64)
        for v in vectors:
            acc += v
        return (theta + acc / n).astype(np.float32)

    np.testing.assert_allclose(server_round(), floor(), rtol=1e-5, atol=1e-6)
    t_server = median_time(server_round, repeats)
    t_floor = median_time(floor, repeats)
    tracemalloc.start()
    tracemalloc.reset_peak()
    server_round()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {
        "clients": n, "dim": d,
        "server": t_server, "numpy_floor": t_floor,
        "ratio_to_floor": t_server["median_s"] / t_floor["median_s"],
        "peak_server_bytes": peak,
        "peak_server_bytes_per_param": peak / d,
        "upload_bytes_per_param": len(uploads[0]) / d,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(CONFIG)
    if args.quick:
        cfg = {"clients": [10], "dims": [100_000], "repeats": 2}
    repeats = args.repeats or cfg["repeats"]
    results = []
    for n in cfg["clients"]:
        for d in cfg["dims"]:
            r = _case(n, d, repeats)
            print(f"n={n:4d} d={d:>9,d}  server {r['server']['median_s']*1e3:8.1f} ms  "
                  f"(x{r['ratio_to_floor']:.2f} numpy floor)  "
                  f"peak {r['peak_server_bytes'] / 2**20:7.1f} MiB  "
                  f"upload {r['upload_bytes_per_param']:.2f} B/param")
            results.append(r)
    return {"config": {**cfg, "repeats": repeats}, "results": results}
