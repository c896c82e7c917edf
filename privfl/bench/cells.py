"""Running one benchmark cell: a registry from :class:`CellKind` to what it runs.

Every runner takes a validated RunConfig and returns a JSON-compatible dict. A cell runs with
one torch thread from start to end, so its numbers do not depend on the machine's core count or
on whether it ran in a worker process: the same seed gives the same numbers on any CPU run.
Adding a kind of cell touches this registry and the runner's module.
"""

from __future__ import annotations

import hashlib
import math
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from privfl.bench.suite import CellKind

__all__ = ["CELL_RUNNERS", "run_cell", "run_federated"]


def _unit_epsilon(report: Any, unit: str) -> tuple[float, str]:
    from privfl.accounting.ledger import UnitKind

    worst = report.worst(UnitKind(unit))
    if worst is None or worst.epsilon is None:
        return math.inf, ""
    return float(worst.epsilon), worst.neighboring_relation


def run_federated(cfg: Any) -> dict[str, Any]:
    """``privfl run`` of ``cfg`` (audited if ``cfg.audit``); accuracy, ε, audit, costs."""
    from privfl.experiment import run_experiment

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="privfl-cell-") as d:
        result = run_experiment(cfg, run_dir=Path(d) / "run", plots=False, checkpoints=False)
    h, report = result.history, result.report
    unit = "client" if cfg.client_level_dp else "example"
    eps, relation = _unit_epsilon(report, unit)
    rounds = [r for r in h.rounds if not r.aborted]
    contributors = [max(1, len(r.contributors)) for r in rounds]
    params = np.asarray(result.params, dtype=np.float32)
    out: dict[str, Any] = {
        "accuracy": h.final_accuracy,
        "test_loss": next((r.test_loss for r in reversed(h.rounds)
                           if math.isfinite(r.test_loss)), math.nan),
        "accuracy_by_round": [r.test_accuracy for r in h.rounds],
        "rounds_run": len(h.rounds), "rounds_aborted": len(h.rounds) - len(rounds),
        "stopped_early": h.stopped_early,
        "accountant_epsilon": eps, "accountant": report.accountant if report.units else "none",
        "unit": unit, "neighboring_relation": relation,
        "round_seconds_median": float(np.median([r.seconds["total"] for r in h.rounds])),
        "bytes_up_per_client": float(np.median(
            [r.bytes_up / c for r, c in zip(rounds, contributors, strict=True)] or [0])),
        "bytes_down_per_client": float(np.median(
            [r.bytes_down / max(1, len(r.selected)) for r in rounds] or [0])),
        "final_params_l2": float(np.linalg.norm(params.astype(np.float64))),
        "final_params_sha256": hashlib.sha256(params.tobytes()).hexdigest(),
        "findings": [], "raw": {}}
    if result.audit is not None:
        a = result.audit
        out["findings"] = [f.to_dict() for f in a.findings]
        out["audit_notes"] = list(a.notes)
        out["raw"] = {"canary_scores": a.canary_scores, "canary_included": a.canary_included,
                      "all_iterates_scores": a.all_iterates_scores,
                      "member_losses": a.member_losses, "non_member_losses": a.non_member_losses}
    out["seconds"] = time.perf_counter() - t0
    return out


def _centralized(cfg: Any) -> dict[str, Any]:
    from privfl.bench.centralized import run_centralized

    return run_centralized(cfg)


def _costs(cfg: Any) -> dict[str, Any]:
    from privfl.bench.costs import run_costs

    return run_costs(cfg)


CELL_RUNNERS: dict[CellKind, Callable[[Any], dict[str, Any]]] = {
    CellKind.FEDERATED: run_federated,
    CellKind.CENTRALIZED: _centralized,
    CellKind.COSTS: _costs,
}


def run_cell(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """Run one cell (a plain-data entry point, so that worker processes can call it).

    The result's ``cell_seconds`` is the time the cell itself took (not its wait in a queue).
    """
    import torch

    from privfl.experiment import RunConfig

    cfg = RunConfig.from_mapping(config)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    t = time.perf_counter()
    try:
        out = CELL_RUNNERS[CellKind(kind)](cfg)
    finally:
        torch.set_num_threads(before)
    out["cell_seconds"] = time.perf_counter() - t
    return out
