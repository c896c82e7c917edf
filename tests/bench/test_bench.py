"""Suites parse into the cells they describe; the runner resumes, records failures, gives the
same numbers in and out of worker processes; tables and plots come out of the cells."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from privfl.bench.runner import cell_path, load_cells, run_suite
from privfl.bench.suite import CellKind, builtin_suites, load_suite
from privfl.bench.tables import aggregate
from privfl.cli import main
from privfl.errors import ConfigurationError

TINY = """
[suite]
name = "tiny"
description = "two mechanisms, two sums"

[defaults]
secure_randomness = false
rounds = 2
clients = 4
audit = true
canaries = 16
update_bound = 20.0

[quick.defaults]
rounds = 1

[datasets.digits]
dataset = "digits"
partitioned = true

[mechanisms.none]
dp = "off"
local_epochs = 1

[mechanisms.local]
label = "local DP-SGD"
dp = "local"
local_steps = 2
dp_sample_rate = 0.3
grad_sample_mode = "ghost"

[mechanisms.central-sgd]
label = "DP-SGD"
kind = "centralized"
dp = "local"
local_steps = 2
dp_sample_rate = 0.3
grad_sample_mode = "ghost"

[[sweep]]
datasets = ["digits"]
mechanisms = ["none", "local"]
epsilon = [4, 8]
secure = ["plain", "secagg"]
partition = ["iid"]
seeds = [0]
quick = { epsilon = [8] }

[[sweep]]
datasets = ["digits"]
mechanisms = ["central-sgd"]
epsilon = [8]
seeds = [0]
"""


def _suite(tmp_path: Path, text: str = TINY, quick: bool = False) -> Any:
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return load_suite(path, quick=quick)


def test_builtin_suites_parse_into_their_sweeps() -> None:
    assert builtin_suites() == ["centralized-baseline", "costs", "privacy-accuracy"]
    full = load_suite("privacy-accuracy")
    quick = load_suite("privacy-accuracy", quick=True)
    assert len(quick.cells) < len(full.cells)
    ids = [c.cell_id for c in full.cells]
    assert len(set(ids)) == len(ids)
    labels = {(c.labels["dataset"], c.labels["mechanism"]) for c in full.cells}
    assert ("synthetic-clients", "distributed") in labels and ("digits", "local") in labels
    # the included suite's cells are part of the table
    assert any(c.kind is CellKind.CENTRALIZED for c in full.cells)
    # non-private mechanisms have one ε: ∞; private ones every ε of the sweep
    eps = {c.labels["epsilon"] for c in full.cells if c.labels["mechanism"] == "none"}
    assert eps == {math.inf}
    eps = {c.labels["epsilon"] for c in full.cells if c.labels["mechanism"] == "central"}
    assert eps == {1.0, 2.0, 4.0, 8.0}
    secure = {c.labels["secure"] for c in full.cells if c.labels["mechanism"] == "distributed"}
    assert secure == {"secagg+"}
    # client-level DP gets at least 1000 clients
    assert all(c.config["clients"] >= 1000 for c in full.cells
               if c.config.get("dp") in ("central", "adaptive", "distributed"))
    costs = load_suite("costs")
    assert costs.jobs == 1 and all(c.kind is CellKind.COSTS for c in costs.cells)
    assert {c.config.get("model") for c in costs.cells} == {"logreg", "mlp"}


def test_a_suite_expands_its_axes(tmp_path: Path) -> None:
    suite = _suite(tmp_path)
    fed = [c for c in suite.cells if c.kind is CellKind.FEDERATED]
    # none: 1 ε × 2 sums; local: 2 ε × 2 sums
    assert len(fed) == 6 and len(suite.cells) == 7
    assert all(c.config["partition"] == "iid" for c in fed)
    local = [c for c in fed if c.labels["mechanism"] == "local"]
    assert {c.config["epsilon"] for c in local} == {4.0, 8.0}
    assert all(c.labels["mechanism_label"] == "local DP-SGD" for c in local)
    quick = _suite(tmp_path, quick=True)
    assert len(quick.cells) == 5 and all(c.config["rounds"] == 1 for c in quick.cells)
    # the id is the configuration: the same cell in another suite is the same file
    assert {c.cell_id for c in _suite(tmp_path).cells} == {c.cell_id for c in suite.cells}


@pytest.mark.parametrize(("edit", "message"), [
    (("mechanisms = [\"none\", \"local\"]", "mechanisms = [\"nope\"]"), "unknown mechanism"),
    (("datasets = [\"digits\"]\nmechanisms = [\"none\"", "datasets = [\"mnist\"]\n"
      "mechanisms = [\"none\""), "unknown data set"),
    (("rounds = 2", "rounds = 0"), "`rounds` must be >= 1"),
    (("seeds = [0]\nquick", "colour = 1\nseeds = [0]\nquick"), "unknown keys"),
    (("dp_sample_rate = 0.3\ngrad_sample_mode = \"ghost\"\n\n[mechanisms.central",
      "dp_sample_rate = 3.0\ngrad_sample_mode = \"ghost\"\n\n[mechanisms.central"),
     "dp_sample_rate"),
])
def test_a_bad_suite_is_refused_before_anything_runs(tmp_path: Path,
                                                     edit: tuple[str, str],
                                                     message: str) -> None:
    assert edit[0] in TINY
    with pytest.raises(ConfigurationError, match=message):
        _suite(tmp_path, TINY.replace(edit[0], edit[1], 1))
    with pytest.raises(ConfigurationError, match="unknown suite"):
        load_suite("no-such-suite")


def _numbers(rec: dict[str, Any]) -> Any:
    r = dict(rec["result"])
    for key in ("seconds", "cell_seconds", "round_seconds_median"):
        r.pop(key, None)
    return r


def test_runner_resumes_records_failures_and_is_deterministic(tmp_path: Path) -> None:
    suite = _suite(tmp_path, quick=True)
    first = run_suite(suite, tmp_path / "a", jobs=1, progress=False)
    assert first.ran == len(suite.cells) and first.skipped == 0 and not first.failed
    again = run_suite(suite, tmp_path / "a", jobs=1, progress=False)
    assert again.ran == 0 and again.skipped == len(suite.cells)
    # a lost cell is run again, the others are not
    lost = suite.cells[2]
    cell_path(first.directory, lost).unlink()
    third = run_suite(suite, tmp_path / "a", jobs=1, progress=False, tables=False)
    assert third.ran == 1 and third.skipped == len(suite.cells) - 1
    # the same cells in two worker processes give the same numbers (one thread per cell)
    par = run_suite(suite, tmp_path / "b", jobs=2, progress=False)
    assert not par.failed
    a = {r["cell_id"]: _numbers(r) for r in load_cells(first.directory, suite.cells)}
    b = {r["cell_id"]: _numbers(r) for r in load_cells(par.directory, suite.cells)}
    assert a == b
    rec = json.loads(cell_path(first.directory, suite.cells[0]).read_text())
    assert rec["status"] == "ok" and rec["stamp"]["git_sha"]
    assert rec["stamp"]["versions"]["torch"] and rec["stamp"]["hardware"]["cpu_count"]
    assert rec["config"]["seed"] == 0 and rec["labels"]["seed"] == 0
    files = {p.name for p in first.files}
    assert files == {"results.md", "summary.json", "accuracy_vs_epsilon.png",
                     "audit_vs_epsilon.png"}
    md = (first.directory / "results.md").read_text()
    assert "## Accuracy against ε" in md and "DP-SGD (centralized)" in md
    assert "## Empirical audit beside the accountant's ε" in md
    assert "## Secure sums against the plain sum" in md


def test_a_failing_cell_is_recorded_and_run_again(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import privfl.bench.runner as runner

    suite = _suite(tmp_path, quick=True)
    boom = suite.cells[0].cell_id

    real = runner.run_cell

    def flaky(kind: str, config: dict[str, Any]) -> dict[str, Any]:
        if any(c.cell_id == boom and c.config == config for c in suite.cells):
            raise ConfigurationError("injected")
        return real(kind, config)

    monkeypatch.setattr(runner, "run_cell", flaky)
    run = run_suite(suite, tmp_path / "f", jobs=1, progress=False, tables=False)
    assert len(run.failed) == 1 and "injected" in run.failed[0]
    rec = json.loads(cell_path(run.directory, suite.cells[0]).read_text())
    assert rec["status"] == "failed" and "injected" in rec["error"]
    monkeypatch.setattr(runner, "run_cell", real)
    again = run_suite(suite, tmp_path / "f", jobs=1, progress=False, tables=False)
    assert again.ran == 1 and not again.failed


def test_aggregate_groups_seeds_and_compares_secure_sums() -> None:
    def cell(secure: str, seed: int, acc: float, l2: float) -> dict[str, Any]:
        return {"kind": "federated", "seconds": 1.0,
                "labels": {"dataset": "d", "mechanism": "m", "mechanism_label": "M",
                           "secure": secure, "epsilon": 2.0, "seed": seed},
                "result": {"accuracy": acc, "accountant_epsilon": 2.0, "final_params_l2": l2,
                           "final_params_sha256": f"{l2}", "findings": [
                               {"method": "one-run audit (x)", "threat_model": "final model",
                                "value": 0.5 + seed, "kind": "lower bound",
                                "confidence": 0.95, "details": {"canary_auc": 0.6}}]}}

    recs = [cell("plain", 0, 0.8, 1.0), cell("plain", 1, 0.9, 2.0),
            cell("ckks", 0, 0.81, 1.0), cell("ckks", 1, 0.9, 2.0)]
    agg = aggregate(recs)
    plain = next(r for r in agg["accuracy"] if r["secure"] == "plain")
    assert plain["accuracy"]["mean"] == pytest.approx(0.85)
    assert plain["accuracy"]["n"] == 2 and plain["one_run"]["max"] == 1.5
    (cmp,) = agg["agreement"]
    assert cmp["secure"] == "ckks" and cmp["max_accuracy_difference"] == pytest.approx(0.01)
    assert cmp["identical_final_models"] == 2


def test_privfl_bench_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--list"]) == 0
    assert "privacy-accuracy" in capsys.readouterr().out
    path = tmp_path / "tiny.toml"
    path.write_text(TINY)
    assert main(["bench", str(path), "--quick", "--out", str(tmp_path), "--jobs", "1",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "tiny-quick: 5 cells run" in out and "results.md" in out
    assert main(["bench", str(path), "--quick", "--out", str(tmp_path), "--quiet"]) == 0
    assert "0 cells run, 5 already done" in capsys.readouterr().out
    assert main(["bench", "nope", "--out", str(tmp_path)]) == 2


def test_run_costs_table_says_withheld_for_client_level_traffic() -> None:
    """Client-level DP withholds byte counts (they reveal participation): no 0, no crash."""
    from privfl.bench.tables import _run_costs_md

    def row(secure: str, up: float) -> dict[str, object]:
        stat = lambda v: {"mean": v, "n": 3}  # noqa: E731
        return {"kind": "federated", "dataset": "d", "label": "client-level DP",
                "secure": secure, "round_seconds": stat(1.0), "bytes_up_per_client": stat(up),
                "bytes_down_per_client": stat(up)}

    text = "\n".join(_run_costs_md([row("plain", 0.0), row("ckks", 0.0)]))
    assert "withheld*" in text and "| 0 |" not in text and "reveal" in text
    text = "\n".join(_run_costs_md([row("plain", 100.0), row("ckks", 250.0)]))
    assert "| 2.50 |" in text and "withheld" not in text
