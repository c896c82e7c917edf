"""Benchmark suites: sweeps over mechanism × ε × data set × partition × secure sum × seed.

A suite is a TOML file (the built-in ones live in ``privfl/bench/suites``)::

    [suite]
    name = "privacy-accuracy"
    description = "..."
    include = ["centralized-baseline"]    # other suites whose cells join this one's table

    [defaults]                            # RunConfig keys of every cell
    rounds = 30
    secure_randomness = false             # reproducible cells (the report says: no guarantee)

    [quick.defaults]                      # --quick: overrides of the defaults
    rounds = 4

    [datasets.digits]                     # named data sets: RunConfig keys
    dataset = "digits"
    clients = 10

    [mechanisms.local]                    # named mechanisms: RunConfig keys, plus
    label = "local DP-SGD"                #   label: for tables and plots
    dp = "local"                          #   kind: federated (default), centralized or costs
                                          #   private = false: no ε axis (ε = ∞)
    [[sweep]]
    datasets = ["digits"]
    mechanisms = ["none", "local"]
    epsilon = [1, 2, 4, 8]
    secure = ["plain", "ckks", "secagg"]
    partition = ["dirichlet"]             # only for data sets whose table has partitioned = true
    seeds = [0, 1, 2]
    set = { local_steps = 10 }            # RunConfig keys for this sweep's cells
    quick = { epsilon = [1], seeds = [0] }  # --quick: overrides of this sweep's axes

A cell's configuration is defaults ⊕ data set ⊕ mechanism ⊕ sweep ``set`` ⊕ its axis values;
its id is a hash of that configuration and its kind, so a finished cell is recognised (and not
run again) whatever order or suite it was produced in.
"""

from __future__ import annotations

import enum
import hashlib
import itertools
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from privfl.errors import ConfigurationError

__all__ = ["Cell", "CellKind", "Suite", "builtin_suites", "load_suite"]

_AXES = ("datasets", "mechanisms", "epsilon", "secure", "partition", "seeds")
_CELL_SCHEMA = 1


class CellKind(enum.Enum):
    """What a cell runs."""

    FEDERATED = "federated"
    """``privfl run`` with the cell's RunConfig (audited when ``audit = true``)."""
    CENTRALIZED = "centralized"
    """Opacus DP-SGD (or plain SGD) on the pooled training data of the cell's federation."""
    COSTS = "costs"
    """A few timed rounds: seconds, bytes per client and server memory per round."""


@dataclass(frozen=True)
class Cell:
    """One configuration of a suite.

    Attributes:
        kind: What it runs.
        config: RunConfig keys (plain TOML values).
        labels: Its coordinates in the sweep (mechanism, ε, data set, …), for tables.
    """

    kind: CellKind
    config: dict[str, Any]
    labels: dict[str, Any]

    @property
    def cell_id(self) -> str:
        """A stable hash of the kind and the configuration."""
        blob = json.dumps({"schema": _CELL_SCHEMA, "kind": self.kind.value,
                           "config": self.config}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def title(self) -> str:
        """A one-line name for progress output."""
        lab = self.labels
        eps = lab.get("epsilon")
        e = "" if eps is None else f" ε={_eps_text(eps)}"
        kind = "" if self.kind is CellKind.FEDERATED else f" ({self.kind.value})"
        return (f"{lab.get('dataset', '?')} {lab.get('mechanism', '?')}{kind}{e} "
                f"{lab.get('secure', '')} seed {lab.get('seed', '?')}").strip()


def _eps_text(eps: float) -> str:
    return "∞" if math.isinf(eps) else f"{eps:g}"


@dataclass(frozen=True)
class Suite:
    """A parsed suite: its cells, its included suites' cells, and its settings."""

    name: str
    description: str
    cells: list[Cell]
    jobs: int = 0
    includes: list[str] = field(default_factory=list)
    mechanism_labels: dict[str, str] = field(default_factory=dict)


def builtin_suites() -> list[str]:
    """Names of the suites that ship with privfl."""
    root = resources.files("privfl.bench") / "suites"
    return sorted(p.name.removesuffix(".toml") for p in root.iterdir()
                  if p.name.endswith(".toml"))


def _read(name_or_path: str | Path) -> tuple[dict[str, Any], str]:
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.is_file():
        try:
            return tomllib.loads(path.read_text()), str(path)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read suite {str(path)!r}: {exc}") from exc
    name = str(name_or_path)
    if name not in builtin_suites():
        raise ConfigurationError(f"unknown suite {name!r}. Built in: "
                                 f"{', '.join(builtin_suites())}; or give a .toml path.")
    text = (resources.files("privfl.bench") / "suites" / f"{name}.toml").read_text()
    return tomllib.loads(text), name


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigurationError(f"`{key}` in {where} must be a table.")
    return dict(value)


def load_suite(name_or_path: str | Path, *, quick: bool = False) -> Suite:
    """Parse a built-in suite by name, or a TOML file, into its cells.

    Every cell's configuration is validated as a RunConfig here, before anything runs.

    Raises:
        ConfigurationError: Unknown names, a malformed table, or an invalid configuration.
    """
    from privfl.experiment import RunConfig

    raw, where = _read(name_or_path)
    head = _table(raw, "suite", where)
    name = str(head.get("name", Path(str(name_or_path)).stem))
    defaults = _table(raw, "defaults", where)
    if quick:
        defaults.update(_table(_table(raw, "quick", where), "defaults", where))
    datasets = _table(raw, "datasets", where)
    mechanisms = _table(raw, "mechanisms", where)
    sweeps = raw.get("sweep", [])
    if not isinstance(sweeps, list) or not sweeps:
        raise ConfigurationError(f"{where} needs at least one [[sweep]].")
    cells: list[Cell] = []
    seen: set[str] = set()
    labels: dict[str, str] = {}
    for i, sweep in enumerate(sweeps):
        axes = {k: sweep.get(k) for k in _AXES}
        if quick:
            axes.update({k: v for k, v in dict(sweep.get("quick", {})).items() if k in _AXES})
        unknown = set(sweep) - {*_AXES, "quick", "set"}
        if unknown:
            raise ConfigurationError(f"sweep {i} in {where}: unknown keys {sorted(unknown)}.")
        for key in ("datasets", "mechanisms"):
            if not axes[key]:
                raise ConfigurationError(f"sweep {i} in {where} needs `{key}`.")
        for ds, mech in itertools.product(axes["datasets"], axes["mechanisms"]):
            if ds not in datasets:
                raise ConfigurationError(f"sweep {i}: unknown data set {ds!r} in {where}.")
            if mech not in mechanisms:
                raise ConfigurationError(f"sweep {i}: unknown mechanism {mech!r} in {where}.")
            mtable = dict(mechanisms[mech])
            dtable = dict(datasets[ds])
            kind = CellKind(mtable.pop("kind", CellKind.FEDERATED.value))
            label = str(mtable.pop("label", mech))
            labels[mech] = label
            private = bool(mtable.pop("private", mtable.get("dp", "off") != "off"))
            partitioned = bool(dtable.pop("partitioned", False))
            eps_axis = [float(e) for e in (axes["epsilon"] or [])] if private else [math.inf]
            if private and not eps_axis:
                raise ConfigurationError(f"sweep {i}: mechanism {mech!r} needs `epsilon`.")
            parts = list(axes["partition"] or [None]) if partitioned else [None]
            for eps, secure, part, seed in itertools.product(
                    eps_axis, axes["secure"] or ["plain"], parts, axes["seeds"] or [0]):
                config = {**defaults, **dtable, **mtable, **dict(sweep.get("set", {})),
                          "secure": secure, "seed": int(seed)}
                if part is not None:
                    config["partition"] = part
                if private:
                    config["epsilon"] = eps
                try:
                    RunConfig.from_mapping(config)
                except ConfigurationError as exc:
                    raise ConfigurationError(
                        f"{where}, sweep {i} ({ds}, {mech}, ε={_eps_text(eps)}, {secure}): "
                        f"{exc}") from exc
                cell = Cell(kind, config, {"dataset": ds, "mechanism": mech,
                                           "mechanism_label": label, "epsilon": eps,
                                           "secure": secure, "partition": part,
                                           "seed": int(seed)})
                if cell.cell_id not in seen:
                    seen.add(cell.cell_id)
                    cells.append(cell)
    includes = [str(x) for x in head.get("include", [])]
    for inc in includes:
        sub = load_suite(inc, quick=quick)
        for c in sub.cells:
            if c.cell_id not in seen:
                seen.add(c.cell_id)
                cells.append(c)
        labels.update(sub.mechanism_labels)
    jobs = int(head.get("jobs", 0))
    return Suite(name=name, description=str(head.get("description", "")), cells=cells,
                 jobs=jobs, includes=includes, mechanism_labels=labels)
