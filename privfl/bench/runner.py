"""Running a suite: resumable, in parallel, with a progress bar; then its tables and plots.

Each finished cell is written to ``<out>/<suite>/cells/<cell id>.json`` (atomically: a crash
never leaves half a file), stamped with the git SHA, package versions, hardware and time of the
invocation that ran it. A cell whose file exists is not run again, so an interrupted suite
resumes where it stopped; ``rerun=True`` runs everything afresh. Cells run in ``jobs`` worker
processes (one torch thread each); a cell that raises is recorded as failed, reported, and run
again on the next invocation.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from privfl.bench.cells import run_cell
from privfl.bench.stamp import stamp
from privfl.bench.suite import Cell, Suite
from privfl.errors import PrivflError

__all__ = ["SuiteRun", "cell_path", "load_cells", "run_suite", "to_jsonable"]

_SCHEMA = 1


@dataclass
class SuiteRun:
    """What one invocation did, and where the suite's results are."""

    directory: Path
    ran: int = 0
    skipped: int = 0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    files: list[Path] = field(default_factory=list)


def cell_path(directory: Path, cell: Cell) -> Path:
    """Where ``cell``'s result lives."""
    return directory / "cells" / f"{cell.cell_id}.json"


def _finished(path: Path) -> bool:
    try:
        return bool(json.loads(path.read_text()).get("status") == "ok")
    except (OSError, ValueError):
        return False


def to_jsonable(x: Any) -> Any:
    """A JSON-compatible copy: non-finite floats as the strings "inf", "-inf", "nan"."""
    if isinstance(x, float) and not math.isfinite(x):
        return "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [to_jsonable(v) for v in x]
    return x


def _write(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(to_jsonable(payload), indent=1, sort_keys=True, allow_nan=False))
    tmp.replace(path)


def load_cells(directory: Path, cells: list[Cell]) -> list[dict[str, Any]]:
    """The finished results of ``cells`` found under ``directory`` (others are left out)."""
    out = []
    for c in cells:
        path = cell_path(directory, c)
        if not _finished(path):
            continue
        raw = json.loads(path.read_text(), parse_constant=float)
        out.append(_restore(raw))
    return out


def _restore(x: Any) -> Any:
    if x in ("inf", "-inf", "nan"):
        return float(x)
    if isinstance(x, dict):
        return {k: _restore(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_restore(v) for v in x]
    return x


def _describe(exc: BaseException) -> str:
    """What a failed cell records: the error, and where it came from unless it is privfl's."""
    text = f"{type(exc).__name__}: {exc}"
    if not isinstance(exc, PrivflError):
        import traceback

        text += " | " + "".join(traceback.format_exception(exc)[-3:]).replace("\n", " ")
    return text


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def run_suite(suite: Suite, out: Path, *, jobs: int = 0, rerun: bool = False,
              progress: bool = True, tables: bool = True,
              on_cell: Callable[[Cell, dict[str, Any]], None] | None = None) -> SuiteRun:
    """Run every unfinished cell of ``suite`` and write its tables and plots.

    Args:
        suite: The parsed suite.
        out: Parent directory; results go to ``out / suite.name``.
        jobs: Worker processes (0: the suite's setting, else one per core; 1: in this process).
        rerun: Run finished cells again.
        progress: Show a progress bar.
        tables: Write the Markdown tables, summary and plots afterwards.
        on_cell: Called with each cell and its record as it finishes.
    """
    directory = Path(out) / suite.name
    run = SuiteRun(directory=directory)
    todo = [c for c in suite.cells if rerun or not _finished(cell_path(directory, c))]
    run.skipped = len(suite.cells) - len(todo)
    jobs = jobs or suite.jobs or (os.cpu_count() or 1)
    jobs = max(1, min(jobs, len(todo) or 1))
    stamped = stamp()
    t0 = time.perf_counter()

    def record(cell: Cell, result: dict[str, Any] | None, error: str | None,
               seconds: float) -> None:
        payload = {"schema": _SCHEMA, "suite": suite.name, "cell_id": cell.cell_id,
                   "kind": cell.kind.value, "labels": cell.labels, "config": cell.config,
                   "status": "ok" if error is None else "failed", "error": error,
                   "result": result or {},
                   "seconds": (result or {}).get("cell_seconds", seconds), "stamp": stamped}
        _write(cell_path(directory, cell), payload)
        if error is None:
            run.ran += 1
        else:
            run.failed.append(f"{cell.title}: {error}")
        if on_cell is not None:
            on_cell(cell, payload)

    bar, task = _progress(progress, len(suite.cells), run.skipped, suite.name)
    try:
        if jobs == 1:
            for cell in todo:
                t = time.perf_counter()
                try:
                    res, err = run_cell(cell.kind.value, cell.config), None
                except Exception as exc:  # recorded, reported, run again next time
                    res, err = None, _describe(exc)
                record(cell, res, err, time.perf_counter() - t)
                _advance(bar, task, cell)
        else:
            with ProcessPoolExecutor(jobs, mp_context=get_context("spawn"),
                                     initializer=_init_worker) as pool:
                started = {pool.submit(run_cell, c.kind.value, c.config): (c, time.perf_counter())
                           for c in todo}
                for fut in as_completed(started):
                    cell, t = started[fut]
                    try:
                        res, err = fut.result(), None
                    except Exception as exc:  # recorded, reported, run again next time
                        res, err = None, _describe(exc)
                    record(cell, res, err, time.perf_counter() - t)
                    _advance(bar, task, cell)
    finally:
        if bar is not None:
            bar.stop()
    run.seconds = time.perf_counter() - t0
    if tables:
        from privfl.bench.tables import write_tables

        run.files = write_tables(suite, directory, load_cells(directory, suite.cells))
    return run


def _progress(enabled: bool, total: int, done: int, name: str) -> tuple[Any, Any]:
    if not enabled:
        return None, None
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(TextColumn(f"[bold]{name}"), MofNCompleteColumn(), BarColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.description}"))
    bar.start()
    task = bar.add_task(f"{done} already done" if done else "", total=total, completed=done)
    return bar, task


def _advance(bar: Any, task: Any, cell: Cell) -> None:
    if bar is not None:
        bar.update(task, advance=1, description=cell.title)
