"""The server: privfl's server role as a Flower strategy, SecAgg+ over the clients' updates."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from privfl.core.bounds import CoordinateClip
from privfl.core.fedavg import Evaluator
from privfl.core.params import ParamSpec
from privfl.core.sampling import FixedSizeSampling
from privfl.integrations.flower import PrivflStrategy
from privfl.secagg import PairwiseSecureSum
from privfl_app import task

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the federation, then write the model, history and privacy report if asked."""
    s = task.settings(context.run_config)
    model = task.model(s)
    strategy = PrivflStrategy(
        model=model,
        secure_sum=PairwiseSecureSum(sparse=True,
                                     rounding_seed=None if s["secure"] else s["seed"]),
        privacy=task.plan(s), stages=CoordinateClip(s["bound"]),
        sampler=FixedSizeSampling(s["partitions"]),
        evaluate=Evaluator(ParamSpec.from_module(model), task.model(s), task.data(s).test),
        min_nodes=s["partitions"], exchange_timeout=s["timeout"], seed=s["seed"])
    strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                   num_rounds=s["rounds"])
    if strategy.history is None or strategy.report is None:
        raise RuntimeError("the strategy did not run")
    last = strategy.history.final_accuracy
    print(f"privfl: accuracy {last:.4f}; worst example-level epsilon "
          f"{max((u.epsilon or 0.0) for u in strategy.report.units):.3f}")
    if s["result"]:
        out = Path(s["result"])
        out.mkdir(parents=True, exist_ok=True)
        np.save(out / "params.npy", strategy.params)
        (out / "history.json").write_text(json.dumps(strategy.history.to_dict(), indent=2))
        (out / "privacy_report.json").write_text(strategy.report.to_json())
