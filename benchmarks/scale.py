"""How the simulator scales: rounds per second and peak driver memory, sequential vs parallel.

For n ∈ {100, 1000} clients of Synthetic(1, 1) (mean 40 examples), every client training each
round (1 local epoch, batch 16), with logistic regression (610 parameters) and an MLP of about
10⁵ parameters (60 → 1500 → 10), the plain sum:

* **rounds per second** — the median wall-clock time of a round (after one warm-up round), for
  clients in the driver (``sequential``), in worker processes (``processes``, one per core) and
  in Ray actors (``ray``, when Ray is installed), all in the same run;
* **peak driver memory** — the peak of Python allocations (tracemalloc) during one round, above
  what was allocated before it, in the driver: the server role's running sum, the messages in
  flight, and (sequential) one client's training; it must not grow with n;
* **Flower** — where flwr is installed, the same rounds through :class:`PrivflStrategy` in
  Flower's Ray simulation (n virtual nodes), timed per round from the strategy's records; up to
  ``flower_max_clients`` nodes (1000 virtual nodes did not finish four rounds in 11 minutes on
  two cores, where privfl's own simulator takes 1.7 s per round).

Parallel results are checked bit for bit against the sequential run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
import tracemalloc
from typing import Any

import numpy as np
import torch

from privfl.core.client import LocalSGD
from privfl.core.fedavg import FedAvg, FedAvgConfig
from privfl.core.sampling import FixedSizeSampling
from privfl.core.simulation import Execution
from privfl.core.weighting import Weighting
from privfl.data import synthetic_federated
from privfl.models import MLP, ModelName, build_model

CONFIG = {"clients": [100, 1000], "models": ["logreg", "mlp100k"], "rounds": 4,
          "modes": ["sequential", "processes", "ray"], "flower_max_clients": 100}


def _model(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    if name == "logreg":
        return build_model(ModelName.LOGREG, (60,), 10, seed=0)
    return MLP(60, 1500, 10)


def _fedavg(n: int, model: str, mode: Execution, rounds: int, data: Any) -> FedAvg:
    return FedAvg(model=_model(model), data=data,
                  client_update=LocalSGD(learning_rate=0.1, epochs=1, batch_size=16),
                  config=FedAvgConfig(rounds=rounds, sampler=FixedSizeSampling(n), seed=1,
                                      weighting=Weighting.UNIFORM),
                  execution=mode)


def _measure(n: int, model: str, mode: Execution, rounds: int, data: Any
             ) -> tuple[dict[str, Any], np.ndarray]:
    fa = _fedavg(n, model, mode, rounds, data)
    try:
        fa.run_round(1, list(range(n)))  # warm-up: starts workers, first allocations
        times = []
        for r in range(2, rounds):
            t = time.perf_counter()
            fa.run_round(r, list(range(n)))
            times.append(time.perf_counter() - t)
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        fa.run_round(rounds, list(range(n)))
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        fa.close()
    med = statistics.median(times)
    return {"mode": mode.value, "round_s_median": med, "rounds_per_s": 1.0 / med,
            "round_s_all": times, "peak_round_alloc_bytes": peak - base,
            "peak_round_alloc_per_param": (peak - base) / fa.spec.dim,
            "dim": fa.spec.dim}, fa.params.copy()


def _flower(n: int, model: str, rounds: int, data: Any) -> dict[str, Any]:
    try:
        from flwr.app import ArrayRecord, Context
        from flwr.serverapp import Grid, ServerApp
        from flwr.simulation import run_simulation
    except ImportError:
        return {"skipped": "flwr is not installed"}
    from privfl.integrations.flower import ClientSetup, PrivflStrategy, privfl_client_app

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    strategy = PrivflStrategy(model=_model(model), sampler=FixedSizeSampling(n), min_nodes=n,
                              exchange_timeout=600.0, seed=1)
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy.start(grid=grid, initial_arrays=ArrayRecord(_model(model).state_dict()),
                       num_rounds=rounds)

    def make(context: Context) -> ClientSetup:
        cid = int(context.node_config["partition-id"])
        return ClientSetup(client_id=cid, data=data.clients[cid], model=_model(model),
                           client_update=LocalSGD(learning_rate=0.1, epochs=1, batch_size=16),
                           seed=1)

    t = time.perf_counter()
    run_simulation(server_app=server_app, client_app=privfl_client_app(make),
                   num_supernodes=n,
                   backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}})
    total = time.perf_counter() - t
    assert strategy.history is not None
    times = [r.seconds["exchange"] for r in strategy.history.rounds[1:]]
    med = statistics.median(times)
    return {"round_s_median": med, "rounds_per_s": 1.0 / med, "round_s_all": times,
            "total_s_with_startup": total}


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(CONFIG)
    if args.quick:
        cfg.update(clients=[100], models=["logreg"], rounds=3, flower_max_clients=0)
    if args.repeats:
        cfg["rounds"] = args.repeats + 2
    try:
        import ray  # noqa: F401
    except ImportError:
        cfg["modes"] = [m for m in cfg["modes"] if m != "ray"]
    results = []
    for model in cfg["models"]:
        for n in cfg["clients"]:
            data = synthetic_federated(n, mean_examples=40, seed=0)
            ref = None
            for mode in cfg["modes"]:
                r, params = _measure(n, model, Execution(mode), int(cfg["rounds"]), data)
                if ref is None:
                    ref = params
                r["equal_to_sequential"] = bool(np.array_equal(params, ref))
                r.update(model=model, clients=n)
                results.append(r)
                print(f"{model:8s} n={n:5d} {mode:10s} {r['rounds_per_s']:7.2f} rounds/s  "
                      f"round {r['round_s_median']:.3f} s  peak round alloc "
                      f"{r['peak_round_alloc_bytes'] / 2**20:7.2f} MiB  "
                      f"({r['peak_round_alloc_per_param']:.1f} B/param)  "
                      f"same as sequential: {r['equal_to_sequential']}")
            if n <= int(cfg["flower_max_clients"]):
                fl = _flower(n, model, int(cfg["rounds"]), data)
                fl.update(model=model, clients=n, mode="flower-simulation")
                results.append(fl)
                if "skipped" not in fl:
                    print(f"{model:8s} n={n:5d} flower     {fl['rounds_per_s']:7.2f} rounds/s  "
                          f"round {fl['round_s_median']:.3f} s")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"config": cfg, "results": results, "driver_max_rss_bytes": rss}
