"""Benchmark suites: privacy against accuracy, with an empirical audit, and what layers cost.

``privfl bench SUITE`` (or :func:`~privfl.bench.runner.run_suite`) expands a TOML suite into
cells (:mod:`~privfl.bench.suite`), runs each once (:mod:`~privfl.bench.cells`: federated,
centralized or costs cells), resumably and in parallel (:mod:`~privfl.bench.runner`), and writes
tables and plots (:mod:`~privfl.bench.tables`); results are stamped
(:mod:`~privfl.bench.stamp`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

if TYPE_CHECKING:
    from privfl.bench.cells import CELL_RUNNERS, run_cell
    from privfl.bench.runner import SuiteRun, load_cells, run_suite
    from privfl.bench.stamp import stamp
    from privfl.bench.suite import Cell, CellKind, Suite, builtin_suites, load_suite
    from privfl.bench.tables import aggregate, write_tables

__all__ = [
    "CELL_RUNNERS",
    "Cell",
    "CellKind",
    "Suite",
    "SuiteRun",
    "aggregate",
    "builtin_suites",
    "load_cells",
    "load_suite",
    "run_cell",
    "run_suite",
    "stamp",
    "write_tables",
]

_EXPORTS = {
    "CELL_RUNNERS": "privfl.bench.cells",
    "run_cell": "privfl.bench.cells",
    "SuiteRun": "privfl.bench.runner",
    "load_cells": "privfl.bench.runner",
    "run_suite": "privfl.bench.runner",
    "stamp": "privfl.bench.stamp",
    "Cell": "privfl.bench.suite",
    "CellKind": "privfl.bench.suite",
    "Suite": "privfl.bench.suite",
    "builtin_suites": "privfl.bench.suite",
    "load_suite": "privfl.bench.suite",
    "aggregate": "privfl.bench.tables",
    "write_tables": "privfl.bench.tables",
}

__getattr__ = lazy_getattr("privfl.bench", _EXPORTS)
