"""A whole experiment from one flat configuration: what ``privfl run`` executes.

:class:`RunConfig` holds every option of ``privfl run`` (the CLI flags and the TOML keys are
its field names). :func:`run_experiment` builds data, model, client update, sampler, server
optimizer and secure sum from it, trains, and writes a run directory with the resolved
``config.toml``, ``history.json`` and ``plot.png``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import difflib
import enum
import json
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from privfl._validation import require_int, require_positive, require_probability, require_real
from privfl.accounting.accountant import Accountant
from privfl.audit.units import AuditUnit
from privfl.core.simulation import Execution
from privfl.core.weighting import Weighting
from privfl.data.digits import Partition
from privfl.errors import ConfigurationError

__all__ = [
    "DEFAULT_THREADS",
    "PRESETS",
    "RUN_FILES",
    "DPMode",
    "DatasetName",
    "ModelChoice",
    "Preset",
    "RunConfig",
    "RunResult",
    "RunStatus",
    "SamplingName",
    "SecureName",
    "ServerOptName",
    "WeightingChoice",
    "build_data",
    "build_model",
    "build_run",
    "read_status",
    "run_experiment",
]


class DatasetName(enum.Enum):
    """Embedded data sets."""

    DIGITS = "digits"
    SYNTHETIC = "synthetic"


class SamplingName(enum.Enum):
    """Client sampling schemes."""

    FIXED = "fixed"
    POISSON = "poisson"


class ServerOptName(enum.Enum):
    """Server optimizers."""

    FEDAVG = "fedavg"
    FEDADAGRAD = "fedadagrad"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"


class ModelChoice(enum.Enum):
    """Which built-in model; ``AUTO`` picks the MLP for digits, logistic regression otherwise."""

    AUTO = "auto"
    MLP = "mlp"
    CNN = "cnn"
    LOGREG = "logreg"


class WeightingChoice(enum.Enum):
    """Client weights; ``AUTO`` is uniform under client-level DP and by examples otherwise.

    Client-level DP refuses example weights: nₖ / maxⱼ nⱼ depends on the largest client's data
    size, which is part of the protected unit.
    """

    AUTO = "auto"
    EXAMPLES = "examples"
    UNIFORM = "uniform"


class DPMode(enum.Enum):
    """Which differential-privacy layer a run uses."""

    OFF = "off"
    LOCAL = "local"
    CENTRAL = "central"
    ADAPTIVE = "adaptive"
    DISTRIBUTED = "distributed"


class Preset(enum.Enum):
    """A named starting point for the other options (any option given explicitly wins)."""

    NONE = "none"
    CROSS_DEVICE = "cross-device"
    """2,000 Synthetic-IID clients, Poisson sampling of 10% per round, logistic regression, 15
    rounds, clip norm 1, lr 0.5, one local epoch of batch 10: the population of the DP tutorial,
    where client-level DP (central, adaptive, distributed) reaches useful accuracy at ε = 4."""


PRESETS: dict[Preset, dict[str, Any]] = {
    Preset.NONE: {},
    Preset.CROSS_DEVICE: {
        "dataset": "synthetic", "synthetic_iid": True, "clients": 2000, "sampling": "poisson",
        "sample_rate": 0.1, "rounds": 15, "clip_norm": 1.0, "lr": 0.5, "local_epochs": 1,
        "batch_size": 10},
}
"""The options each preset sets (before the explicitly given ones)."""


class SecureName(enum.Enum):
    """Secure-sum mechanisms available to the CLI."""

    PLAIN = "plain"
    CKKS = "ckks"
    CKKS_STANDARD = "ckks-standard"
    SECAGG = "secagg"
    SECAGG_PLUS = "secagg+"
    MULTISERVER = "multiserver"


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Every option of ``privfl run``; see ``privfl run --help`` for each one's meaning."""

    preset: Preset = Preset.NONE
    dataset: DatasetName = DatasetName.DIGITS
    model: ModelChoice = ModelChoice.AUTO
    hidden: int = 64
    clients: int = 10
    partition: Partition = Partition.DIRICHLET
    alpha: float = 0.5
    shards_per_client: int = 2
    synthetic_alpha: float = 1.0
    synthetic_beta: float = 1.0
    synthetic_iid: bool = False
    rounds: int = 50
    sampling: SamplingName = SamplingName.FIXED
    clients_per_round: int = 0
    sample_rate: float = 1.0
    local_epochs: int = 2
    local_steps: int = 0
    batch_size: int = 16
    lr: float = 0.2
    momentum: float = 0.0
    fedprox_mu: float = 0.0
    server_opt: ServerOptName = ServerOptName.FEDAVG
    server_lr: float = 0.0
    server_momentum: float = 0.0
    weighting: WeightingChoice = WeightingChoice.AUTO
    secure: SecureName = SecureName.PLAIN
    update_bound: float = 1.0
    malicious_server: bool = False
    dropout_rate: float = 0.0
    dp: DPMode = DPMode.OFF
    epsilon: float = 0.0
    delta: float = 1e-5
    noise_multiplier: float = 0.0
    clip_norm: float = 0.0
    dp_sample_rate: float = 0.05
    grad_sample_mode: str = "auto"
    clipped_count_stddev: float = 0.0
    accountant: Accountant = Accountant.PLD
    secure_randomness: bool = True
    execution: Execution = Execution.SEQUENTIAL
    workers: int = 0
    threads: int = 0
    audit: bool = False
    audit_unit: AuditUnit = AuditUnit.AUTO
    canaries: int = 0
    audit_confidence: float = 0.95
    canary_norm: float = 1.0
    holdout_clients: int = 0
    seed: int = 0
    out: str = "runs"
    name: str = ""

    def __post_init__(self) -> None:
        self._check_types()
        require_int("clients", self.clients, minimum=1)
        require_int("hidden", self.hidden, minimum=1)
        require_positive("alpha", self.alpha)
        require_int("shards_per_client", self.shards_per_client, minimum=1)
        require_real("synthetic_alpha", self.synthetic_alpha, low=0.0)
        require_real("synthetic_beta", self.synthetic_beta, low=0.0)
        require_int("rounds", self.rounds, minimum=1)
        require_int("clients_per_round", self.clients_per_round, minimum=0,
                    maximum=self.clients, tip="0 means all clients.")
        require_probability("sample_rate", self.sample_rate)
        require_int("local_epochs", self.local_epochs, minimum=0)
        require_int("local_steps", self.local_steps, minimum=0)
        if self.local_epochs == 0 and self.local_steps == 0:
            raise ConfigurationError(
                "one of `local_epochs` and `local_steps` must be > 0. Found both 0.")
        require_int("batch_size", self.batch_size, minimum=0, tip="0 means full batch.")
        require_positive("lr", self.lr)
        require_real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        require_real("fedprox_mu", self.fedprox_mu, low=0.0)
        require_real("server_lr", self.server_lr, low=0.0, tip="0 picks the optimizer's default.")
        require_real("server_momentum", self.server_momentum, low=0.0, high=1.0, high_open=True)
        require_positive("update_bound", self.update_bound)
        require_real("dropout_rate", self.dropout_rate, low=0.0, high=1.0, high_open=True)
        if self.malicious_server and self.secure not in (SecureName.SECAGG,
                                                         SecureName.SECAGG_PLUS):
            raise ConfigurationError(
                "`malicious_server` hardens pairwise masking: it needs `--secure secagg` or "
                f"`--secure secagg+`. Found --secure {self.secure.value}.")
        if self.malicious_server and self.execution is not Execution.SEQUENTIAL:
            raise ConfigurationError(
                "`malicious_server` provisions the simulated clients' identities in this "
                "process; it runs with `--execution sequential` (a deployment provisions each "
                "node's identity out of band).")
        require_int("seed", self.seed, minimum=0)
        require_int("workers", self.workers, minimum=0, tip="0 means one per core.")
        require_int("threads", self.threads, minimum=0, tip="0 means privfl's default (1).")
        require_int("canaries", self.canaries, minimum=0, tip="0 picks the unit's default.")
        if 0 < self.canaries < 4:
            raise ConfigurationError(f"`canaries` must be 0 or >= 4. Found {self.canaries}.")
        require_real("audit_confidence", self.audit_confidence, low=0.0, high=1.0,
                     low_open=True, high_open=True)
        require_positive("canary_norm", self.canary_norm)
        require_int("holdout_clients", self.holdout_clients, minimum=0,
                    tip="0 means max(20, clients / 10).")
        require_real("epsilon", self.epsilon, low=0.0, tip="0 means no target.")
        require_real("delta", self.delta, low=0.0, high=1.0, low_open=True, high_open=True)
        require_real("noise_multiplier", self.noise_multiplier, low=0.0,
                     tip="0 means calibrate from --epsilon.")
        require_real("clip_norm", self.clip_norm, low=0.0, tip="0 picks the DP mode's default.")
        require_probability("dp_sample_rate", self.dp_sample_rate)
        require_real("clipped_count_stddev", self.clipped_count_stddev, low=0.0)
        if self.grad_sample_mode not in ("auto", "hooks", "functorch", "ew", "ghost"):
            raise ConfigurationError("`grad_sample_mode` must be one of auto, hooks, functorch, "
                                     f"ew, ghost. Found {self.grad_sample_mode!r}.")
        if self.dp is not DPMode.OFF and self.epsilon == 0 and self.noise_multiplier == 0:
            raise ConfigurationError(
                f"`--dp {self.dp.value}` needs a target: give `epsilon` (σ is calibrated so the "
                "run ends at it) or `noise_multiplier`. Found neither.")
        if self.client_level_dp and self.weighting is WeightingChoice.EXAMPLES:
            raise ConfigurationError(
                f"`--dp {self.dp.value}` is client-level DP and needs uniform client weights: "
                "example weights n_k / max_j n_j depend on the largest client's data size, which "
                "is part of the protected unit. Found `weighting` = 'examples'. Tip: "
                "`--weighting uniform` (or leave it at 'auto').")
        if self.dp is DPMode.OFF and (self.epsilon or self.noise_multiplier):
            raise ConfigurationError(
                "`epsilon`/`noise_multiplier` were given but `dp` is 'off'. Tip: add "
                "`--dp local|central|adaptive`.")

    def _check_types(self) -> None:
        """Every field has its declared type: a string "false" is not a boolean."""
        for f in dataclasses.fields(self):
            default = f.default
            if not isinstance(default, enum.Enum):  # (frozen: an int for a float is widened)
                object.__setattr__(self, f.name, _typed(f.name, default, getattr(self, f.name)))

    @property
    def client_level_dp(self) -> bool:
        """Whether the DP mode protects whole clients (central, adaptive, distributed)."""
        return self.dp in (DPMode.CENTRAL, DPMode.ADAPTIVE, DPMode.DISTRIBUTED)

    @property
    def resolved_weighting(self) -> Weighting:
        """The weighting ``AUTO`` stands for: uniform under client-level DP, else examples."""
        if self.weighting is WeightingChoice.AUTO:
            return Weighting.UNIFORM if self.client_level_dp else Weighting.EXAMPLES
        return Weighting(self.weighting.value)

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> RunConfig:
        """Build from plain values (TOML or CLI), converting enum fields from their strings."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        preset = {k.replace("-", "_"): v for k, v in values.items()}.get("preset")
        if preset is not None:
            try:
                base = PRESETS[Preset(preset)]
            except ValueError as exc:
                allowed = ", ".join(m.value for m in Preset)
                raise ConfigurationError(
                    f"`preset` must be one of {allowed}. Found {preset!r}.") from exc
            values = {**base, **{k.replace("-", "_"): v for k, v in values.items()}}
        for raw_key, value in values.items():
            key = raw_key.replace("-", "_")
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1, cutoff=0.6)
                tip = (f" Did you mean `{close[0]}`?" if close
                       else " `privfl run --help` lists every option.")
                raise ConfigurationError(f"unknown option `{raw_key}`.{tip}")
            default = fields[key].default
            if isinstance(default, enum.Enum):
                try:
                    value = type(default)(value)
                except ValueError as exc:
                    allowed = ", ".join(m.value for m in type(default))
                    raise ConfigurationError(
                        f"`{key}` must be one of {allowed}. Found {value!r}.") from exc
            else:
                value = _typed(key, default, value)
            kwargs[key] = value
        return cls(**kwargs)

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> RunConfig:
        """Read a TOML file (flat keys, or under a ``[run]`` table) and apply ``overrides``."""
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigurationError(f"cannot read config file {str(path)!r}: {exc}") from exc
        table = raw.get("run", raw)
        if not isinstance(table, dict):
            raise ConfigurationError(f"`run` in {path} must be a table.")
        return cls.from_mapping({**table, **(overrides or {})})

    def to_plain(self) -> dict[str, Any]:
        """Field name → TOML-compatible value."""
        return {k: (v.value if isinstance(v, enum.Enum) else v)
                for k, v in dataclasses.asdict(self).items()}

    def to_toml(self) -> str:
        """The resolved configuration as TOML (readable back with ``--config``)."""
        lines = ["[run]"]
        for k, v in self.to_plain().items():
            lines.append(f"{k} = {json.dumps(v)}")
        return "\n".join(lines) + "\n"


def _typed(key: str, default: Any, value: Any) -> Any:
    """``value`` as the type of ``default`` (an int for a float), or a ConfigurationError."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigurationError(
                f"`{key}` must be true or false. Found {value!r} ({type(value).__name__}).")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigurationError(
                f"`{key}` must be a number. Found {value!r} ({type(value).__name__}).")
        return float(value)
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(
                f"`{key}` must be an integer. Found {value!r} ({type(value).__name__}).")
        return value
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigurationError(
            f"`{key}` must be a string. Found {value!r} ({type(value).__name__}).")
    return value


@dataclass(frozen=True)
class RunResult:
    """Where a run wrote its files, its history, privacy report and audit (if any)."""

    run_dir: Path
    history: Any
    report: Any = None
    audit: Any = None
    params: Any = None
    """The final global model as a flat float32 vector."""


def build_data(cfg: RunConfig, *, clients: int | None = None) -> Any:
    """The federated data set of ``cfg`` (with ``clients`` clients instead, if given)."""
    from privfl.data.digits import federated_digits
    from privfl.data.synthetic import synthetic_federated

    n = cfg.clients if clients is None else clients
    if cfg.dataset is DatasetName.DIGITS:
        return federated_digits(n, partition=cfg.partition, alpha=cfg.alpha,
                                shards_per_client=cfg.shards_per_client, seed=cfg.seed)
    return synthetic_federated(n, alpha=cfg.synthetic_alpha, beta=cfg.synthetic_beta,
                               seed=cfg.seed, iid=cfg.synthetic_iid)


def build_model(cfg: RunConfig, data: Any) -> Any:
    """The model of ``cfg`` for ``data``, with deterministic initial weights."""
    from privfl.models import ModelName, build_model

    default_model = ModelName.MLP if cfg.dataset is DatasetName.DIGITS else ModelName.LOGREG
    model_name = default_model if cfg.model is ModelChoice.AUTO else ModelName(cfg.model.value)
    return build_model(model_name, data.input_shape, data.num_classes, seed=cfg.seed,
                       hidden=cfg.hidden)


def build_run(cfg: RunConfig, data: Any = None, model: Any = None,
              wrap_update: Callable[[Any], Any] | None = None) -> Any:
    """The FedAvg driver of ``cfg`` and its DP plan (``(driver, plan)``), not yet run.

    ``data`` and ``model`` replace what ``cfg`` would build; ``wrap_update`` wraps the client
    update (an audit's canary clients, a benchmark's timer).
    """
    import numpy as np

    from privfl.core.client import FedProx, LocalSGD
    from privfl.core.fedavg import FedAvg, FedAvgConfig
    from privfl.core.sampling import FixedSizeSampling, PoissonSampling
    from privfl.core.securesum import PlainSecureSum
    from privfl.core.server_opt import FedAdagrad, FedAdam, FedAvgServer, FedYogi
    from privfl.core.transport import InMemoryTransport, RandomDropout

    data = build_data(cfg) if data is None else data
    model = build_model(cfg, data) if model is None else model
    local: dict[str, Any] = {
        "learning_rate": cfg.lr, "momentum": cfg.momentum,
        "batch_size": cfg.batch_size or None,
        "epochs": None if cfg.local_steps else cfg.local_epochs,
        "steps": cfg.local_steps or None,
    }
    update = FedProx(mu=cfg.fedprox_mu, **local) if cfg.fedprox_mu > 0 else LocalSGD(**local)
    sampler: Any
    if cfg.sampling is SamplingName.POISSON:
        sampler = PoissonSampling(cfg.sample_rate)
    else:
        sampler = FixedSizeSampling(cfg.clients_per_round or data.num_clients)
    server_opt: Any
    if cfg.server_opt is ServerOptName.FEDAVG:
        server_opt = FedAvgServer(cfg.server_lr or 1.0, cfg.server_momentum)
    else:
        cls = {ServerOptName.FEDADAM: FedAdam, ServerOptName.FEDYOGI: FedYogi,
               ServerOptName.FEDADAGRAD: FedAdagrad}[cfg.server_opt]
        server_opt = cls(learning_rate=cfg.server_lr or 1e-2)
    dropout = (RandomDropout(cfg.dropout_rate, np.random.default_rng(cfg.seed + 7))
               if cfg.dropout_rate > 0 else None)
    from privfl.core.params import ParamSpec
    from privfl.recipes import build_dp

    rounding_seed = None if cfg.secure_randomness else cfg.seed
    identities = None
    if cfg.malicious_server:
        from privfl.secagg.identity import provision_identities

        identities = provision_identities(range(data.num_clients))
    secure_sum: Any = PlainSecureSum() if cfg.secure is SecureName.PLAIN else _secure_sum(
        cfg.secure, rounding_seed, identities)
    dp = build_dp(cfg, update, sampler, data.num_clients, ParamSpec.from_module(model).dim,
                  secure_sum)
    stages = dp.stages
    if hasattr(secure_sum, "plan"):
        per_round = sampler.max_clients(data.num_clients)
        plan = secure_sum.plan(per_round)
        dp.notes.append(f"{secure_sum.name} planned for the most clients a round can select: "
                        f"{plan.summary()}. Each round derives k and t from the clients it "
                        "selects, and every client checks them.")
    if cfg.secure is not SecureName.PLAIN:
        from privfl.core.bounds import CoordinateClip

        if stages is None:  # bounded encodings; client-level DP bounds the values already
            stages = CoordinateClip(cfg.update_bound)
            dp.notes.append(f"Each coordinate of each update was clipped to ±{cfg.update_bound:g} "
                            f"so that the {cfg.secure.value} sum cannot overflow (no privacy "
                            "effect).")
    update = dp.client_update if wrap_update is None else wrap_update(dp.client_update)
    return FedAvg(model=model, data=data, client_update=update,
                  config=FedAvgConfig(rounds=cfg.rounds, sampler=sampler, seed=cfg.seed,
                                      weighting=cfg.resolved_weighting),
                  server_optimizer=server_opt, secure_sum=secure_sum,
                  transport=InMemoryTransport(dropout), stages=stages,
                  execution=cfg.execution, workers=cfg.workers), dp


def _secure_sum(name: SecureName, rounding_seed: int | None, identities: Any = None) -> Any:
    if name in (SecureName.CKKS, SecureName.CKKS_STANDARD):
        from privfl.he.params import COMPACT, STANDARD
        from privfl.he.securesum import CKKSSecureSum

        return CKKSSecureSum(STANDARD if name is SecureName.CKKS_STANDARD else COMPACT,
                             rounding_seed=rounding_seed)
    if name is SecureName.MULTISERVER:
        from privfl.secagg.multiserver import MultiServerSecureSum

        return MultiServerSecureSum(2, rounding_seed=rounding_seed)
    from privfl.secagg.pairwise import PairwiseSecureSum

    return PairwiseSecureSum(sparse=name is SecureName.SECAGG_PLUS, rounding_seed=rounding_seed,
                             identities=identities)


DEFAULT_THREADS = 1
"""Torch intra-op threads of a run unless ``threads`` says otherwise.

privfl's models are small (logistic regression, MLPs of 10⁴–10⁶ parameters) and train on
mini-batches of tens of examples, where torch's intra-op parallelism costs more in
synchronisation than it saves and a busy core stalls every step (a run on 2 cores with one
of them busy took 19.7 s with torch's default against 8.2 s with one thread). Parallelism comes
from running clients side by side instead (``--execution processes`` or ``ray``).
"""


RUN_FILES = ("status.json", "config.toml", "checkpoint.ckpt", "history.json", "plot.png",
             "audit.json", "privacy_report.json", "privacy_report.md", "privacy_epsilon.png")
"""Everything a run directory can hold (``status.json`` says how far the run got)."""


class RunStatus(enum.Enum):
    """How far a run got, recorded in its directory's ``status.json``."""

    RUNNING = "running"
    FINISHED = "finished"
    INTERRUPTED = "interrupted"
    FAILED = "failed"


def _write_status(run_dir: Path, status: RunStatus, reason: str = "") -> None:
    """Atomically record ``status`` (and why, for failures) in ``run_dir/status.json``."""
    tmp = run_dir / f".status.json.tmp{os.getpid()}"
    tmp.write_text(json.dumps({"status": status.value, "reason": reason,
                               "time": _dt.datetime.now().isoformat(timespec="seconds")}))
    tmp.replace(run_dir / "status.json")


def _prepare_run_dir(run_dir: Path, overwrite: bool) -> None:
    """Create ``run_dir``, refusing one that holds anything unless ``overwrite`` (then cleared).

    Only a privfl run directory is cleared (it has a ``status.json`` or ``config.toml``, and
    nothing but run files): ``--overwrite`` never deletes someone else's files.
    """
    try:
        if run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())):
            if not overwrite:
                raise ConfigurationError(
                    f"run directory {str(run_dir)!r} already exists. Tip: choose another "
                    "--name, or pass --overwrite to replace that run.")
            entries = list(run_dir.iterdir()) if run_dir.is_dir() else []
            foreign = [e.name for e in entries if e.is_dir() or not (
                e.name in RUN_FILES or any(e.name.startswith(f".{f}.tmp") for f in RUN_FILES))]
            if not run_dir.is_dir() or foreign or not {e.name for e in entries} & {
                    "status.json", "config.toml"}:
                raise ConfigurationError(
                    f"--overwrite refuses to clear {str(run_dir)!r}: it is not a privfl run "
                    f"directory (it holds {sorted(foreign)[:5] or 'no run files'}).")
            for e in entries:
                e.unlink()
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigurationError(
            f"cannot write the run directory {str(run_dir)!r}: {exc.strerror or exc}. Tip: "
            "`--out` must be a writable directory (it is created if missing).") from exc


def run_experiment(cfg: RunConfig, *, on_round: Callable[[Any], None] | None = None,
                   run_dir: Path | None = None, plots: bool = True,
                   overwrite: bool = False, resume: bool = False,
                   checkpoints: bool = True) -> RunResult:
    """Train as configured and write the run directory; returns it with the history.

    ``plots=False`` skips the PNGs (benchmark cells run many of these). Torch's intra-op
    threads are set to ``cfg.threads`` (:data:`DEFAULT_THREADS` when 0) for the run and
    restored afterwards.

    The run directory must not exist yet or be empty; ``overwrite=True`` clears an earlier
    run there first, so that every file in it belongs to this run. ``status.json`` records
    ``running``, then ``finished``, ``interrupted`` (Ctrl-C) or ``failed`` with the reason.

    After every round the run directory gets a checkpoint (``checkpoint.ckpt``, see
    :mod:`privfl.resume`; ``checkpoints=False`` skips it). Ctrl-C lets the current round
    finish, writes the history and privacy report so far and raises
    :class:`~privfl.resume.RunInterrupted`; ``resume=True`` continues the run in ``run_dir``
    (whose ``config.toml`` must be ``cfg``) to its planned rounds.

    With ``cfg.audit`` the run plants canaries first (:class:`~privfl.audit.plan.AuditPlan`),
    and the privacy report carries the audit's findings beside the accountant's ε; the raw
    scores go to ``audit.json``.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(cfg.threads or DEFAULT_THREADS)
    try:
        return _run_experiment(cfg, on_round=on_round, run_dir=run_dir, plots=plots,
                               overwrite=overwrite, resume=resume, checkpoints=checkpoints)
    finally:
        torch.set_num_threads(before)


def read_status(run_dir: Path) -> dict[str, Any]:
    """``status.json`` of a run directory (``{}`` if it has none or it is unreadable)."""
    try:
        raw = json.loads((run_dir / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return raw if isinstance(raw, dict) else {}


def _check_resumable(cfg: RunConfig, run_dir: Path) -> None:
    from privfl.resume import CHECKPOINT

    status = read_status(run_dir).get("status")
    if status == RunStatus.FINISHED.value:
        raise ConfigurationError(f"the run in {str(run_dir)!r} has finished: there is nothing "
                                 "to resume.")
    if not (run_dir / CHECKPOINT).exists():
        raise ConfigurationError(
            f"{str(run_dir)!r} holds no checkpoint to resume from (status: "
            f"{status or 'unknown'}; a run checkpoints after each completed round).")
    try:
        written = RunConfig.from_toml(run_dir / "config.toml")
    except ConfigurationError:
        written = None
    if written is None or _identity(written) != _identity(cfg):
        raise ConfigurationError(f"--resume continues the run as configured in "
                                 f"{str(run_dir / 'config.toml')!r}; options other than "
                                 "--threads cannot change.")


def _identity(cfg: RunConfig) -> str:
    """What a checkpoint must match: the configuration, less what cannot change results.

    That is ``threads``: it may differ between the interrupted run and its resumption.
    """
    return dataclasses.replace(cfg, threads=0).to_toml()


def _run_experiment(cfg: RunConfig, *, on_round: Callable[[Any], None] | None,
                    run_dir: Path | None, plots: bool, overwrite: bool, resume: bool,
                    checkpoints: bool) -> RunResult:
    from privfl.resume import RunInterrupted

    if run_dir is None:
        if resume:
            raise ConfigurationError("resume needs the run directory.")
        stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
        run_dir = Path(cfg.out) / (cfg.name or f"{stamp}-{cfg.dataset.value}-{cfg.secure.value}")
    if resume:
        _check_resumable(cfg, run_dir)
    else:
        _prepare_run_dir(run_dir, overwrite)
    _write_status(run_dir, RunStatus.RUNNING)
    if not resume:
        (run_dir / "config.toml").write_text(cfg.to_toml())
    try:
        plan = None
        if cfg.audit:
            from privfl.audit.plan import AuditPlan

            plan = AuditPlan(cfg, build_data, build_model)
            driver, dp = build_run(cfg, plan.data, plan.model, plan.wrap)
            plan.start(driver.params)
        else:
            driver, dp = build_run(cfg)
        _warn_if_noise_swamps(dp, driver)
        result = _train_and_write(cfg, driver, dp, plan, run_dir, on_round, plots,
                                  resume=resume, checkpoints=checkpoints)
    except RunInterrupted as exc:
        _write_status(run_dir, RunStatus.INTERRUPTED, str(exc))
        raise
    except KeyboardInterrupt:
        _write_status(run_dir, RunStatus.INTERRUPTED, "interrupted (Ctrl-C) before the end")
        raise
    except BaseException as exc:
        _write_status(run_dir, RunStatus.FAILED, f"{type(exc).__name__}: {exc}")
        raise
    _write_status(run_dir, RunStatus.FINISHED)
    return result


def _warn_if_noise_swamps(dp: Any, driver: Any) -> None:
    """Say before training when client-level noise will outweigh any update.

    See :meth:`~privfl.recipes.DPPlan.noise_warning`; the report keeps the warning too.
    """
    import warnings

    from privfl.errors import UtilityWarning

    message = dp.noise_warning(driver.config.sampler, driver.data.num_clients, driver.spec.dim)
    if message is not None:
        dp.notes.append(f"Warning (before the run): {message}")
        warnings.warn(message, UtilityWarning, stacklevel=4)


def _train_and_write(cfg: RunConfig, driver: Any, dp: Any, plan: Any, run_dir: Path,
                     on_round: Callable[[Any], None] | None, plots: bool, *, resume: bool,
                     checkpoints: bool) -> RunResult:
    from privfl import resume as durable

    digest = durable.config_digest(_identity(cfg))
    history = None
    if resume:
        history, note = durable.restore(run_dir, driver, plan, digest)
        if note is not None:
            dp.notes.append(note)
    last: dict[str, Any] | None = None
    box: dict[str, Any] = {}

    def round_done(record: Any) -> None:
        nonlocal last
        if plan is not None:
            plan.observe(driver.params)
        if checkpoints:
            last = durable.capture(driver, box["history"], plan, digest)
            durable.write(run_dir, last)
        if on_round is not None:
            on_round(record)

    if history is None:
        history = driver.new_history()
    box["history"] = history
    if checkpoints and not resume:
        last = durable.capture(driver, history, plan, digest)  # round 0: resumable from here
        durable.write(run_dir, last)
    with durable.GracefulInterrupt() as interrupt:
        try:
            driver.run(on_round=round_done, history=history, stop=lambda: interrupt.requested)
        except KeyboardInterrupt:
            resumable = checkpoints and durable.abandon(run_dir, last, driver)
            _write_outputs(cfg, driver, dp, None, run_dir, history, plots)
            raise durable.RunInterrupted(run_dir, len(history.rounds), cfg.rounds,
                                         resumable) from None
    if interrupt.requested and len(history.rounds) < cfg.rounds and not history.stopped_early:
        _write_outputs(cfg, driver, dp, None, run_dir, history, plots)
        raise durable.RunInterrupted(run_dir, len(history.rounds), cfg.rounds, checkpoints)
    return _write_outputs(cfg, driver, dp, plan, run_dir, history, plots)


def _write_outputs(cfg: RunConfig, driver: Any, dp: Any, plan: Any, run_dir: Path,
                   history: Any, plots: bool) -> RunResult:
    """History, plots, privacy report (and the audit, at the end of a run)."""
    from privfl.plotting import plot_history

    history.save(run_dir / "history.json")
    if plots:
        plot_history(history, run_dir / "plot.png", title=f"privfl run: {run_dir.name}")
    report = dp.report(driver.secure_sum.trust_assumption(), history)
    audit = None
    if plan is not None:
        audit = plan.finish(driver.params, report)
        audit.save(run_dir / "audit.json")
        report = report.with_audits(audit.findings)
    (run_dir / "privacy_report.json").write_text(report.to_json())
    (run_dir / "privacy_report.md").write_text(report.to_markdown())
    if report.units and plots:
        report.plot(run_dir / "privacy_epsilon.png")
    return RunResult(run_dir=run_dir, history=history, report=report, audit=audit,
                     params=driver.params.copy())
