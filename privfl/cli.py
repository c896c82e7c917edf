"""The ``privfl`` command line: ``privfl run`` trains a federated model and writes a run directory.

Every option of ``privfl run`` is a flag and can also come from a TOML file (``--config``); flags
given on the command line win over the file, the file over the defaults.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import os
import sys
import warnings
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any, NoReturn

from privfl.errors import ConfigurationError, PrivflError
from privfl.experiment import RunConfig, run_experiment

__all__ = ["main"]

_HELP: dict[str, str] = {
    "preset": "a starting point for the other options (explicit ones win): cross-device is "
              "2,000 Synthetic-IID clients, 10%% per round, logistic regression, 15 rounds, "
              "where client-level DP (--dp central/adaptive/distributed) reaches useful accuracy",
    "dataset": "embedded data set: scikit-learn's bundled digits, or generated Synthetic(a, b)",
    "model": "model: mlp/cnn for digits, logreg for synthetic; auto picks by data set",
    "hidden": "hidden units of the MLP (--model mlp)",
    "clients": "number of clients in the federation",
    "partition": "how digits are split among clients: iid, dirichlet (label skew), shards",
    "alpha": "Dirichlet concentration of the label-skew partition (> 0; small = more skewed)",
    "shards_per_client": "shards per client for --partition shards",
    "synthetic_alpha": "Synthetic(a, b): model heterogeneity a >= 0",
    "synthetic_beta": "Synthetic(a, b): data heterogeneity b >= 0",
    "synthetic_iid": "Synthetic-IID instead: one labelling model shared by all clients",
    "rounds": "number of federated rounds",
    "sampling": "client sampling: fixed (k clients without replacement) or poisson (rate q)",
    "clients_per_round": "k for --sampling fixed (0 = all clients)",
    "sample_rate": "q in (0, 1] for --sampling poisson",
    "local_epochs": "local epochs per round (ignored when --local-steps is given)",
    "local_steps": "local mini-batch steps per round; takes precedence over --local-epochs",
    "batch_size": "local mini-batch size (0 = full batch; with 1 step this is FedSGD)",
    "lr": "client learning rate",
    "momentum": "client SGD momentum in [0, 1)",
    "fedprox_mu": "FedProx proximal weight mu (0 = plain local SGD)",
    "server_opt": "server optimizer on the averaged delta (Reddi et al. 2021)",
    "server_lr": "server learning rate (0 = default: 1.0 for fedavg, 0.01 for adaptive ones)",
    "server_momentum": "server momentum for --server-opt fedavg (FedAvgM)",
    "weighting": "weight client deltas by number of examples or uniformly; auto is uniform "
                 "under client-level DP (which refuses example weights) and examples otherwise",
    "secure": "secure-sum mechanism: plain (server sees updates), ckks (CKKS encryption, "
              "compact), ckks-standard (CKKS with NVFlare's TenSEAL set-up), secagg / secagg+ "
              "(pairwise masking, complete or sparse graph), multiserver (2-server sharing)",
    "update_bound": "without client-level DP, bounded secure sums (all but plain) clip each update "
                    "coordinate to +-this",
    "malicious_server": "secagg/secagg+ against a server that lies (Bonawitz et al.'s active "
                        "variant): clients' Ed25519 identities are provisioned out of band, "
                        "keys and the survivor list are signed, t > (k + 1 + colluders)/2",
    "dropout_rate": "probability that a selected client drops out before uploading",
    "dp": "differential privacy: off, local (DP-SGD on clients, example-level), central "
          "(client-level DP-FedAvg, fixed clipping), adaptive (client-level, quantile clipping), "
          "distributed (client-level, discrete Gaussian shares under --secure "
          "secagg/secagg+/multiserver)",
    "epsilon": "target epsilon at the end of the run; sigma is calibrated to it and it is "
               "enforced as a budget (0 = none)",
    "delta": "delta of the guarantee, in (0, 1)",
    "noise_multiplier": "explicit noise multiplier sigma instead of calibrating from --epsilon",
    "clip_norm": "clip norm C: per-example gradient (local) or per-client update (central); "
                 "0 = default (1.0; adaptive starts at 0.1)",
    "dp_sample_rate": "local DP-SGD: Poisson rate q of each client's examples per step",
    "grad_sample_mode": "local DP-SGD: Opacus per-sample gradient mode, auto measures and picks",
    "clipped_count_stddev": "adaptive clipping: noise std of the unclipped count (0 = 0.05 x "
                            "expected clients per round)",
    "accountant": "accountant that certifies epsilon (RDP is always reported alongside)",
    "secure_randomness": "draw every privacy-relevant random choice (DP noise, client "
                         "sampling, DP-SGD batches) from the OS-seeded ChaCha20 CSPRNG; "
                         "--no-secure-randomness uses the seeded simulation generators: "
                         "reproducible, but the report then states no guarantee (the noise "
                         "can be regenerated from the seed)",
    "execution": "where simulated clients train: sequential (this process), processes (one "
                 "worker process per core), ray (Ray actors), auto (ray if installed)",
    "workers": "worker processes or Ray actors for parallel execution (0 = one per core)",
    "threads": "torch intra-op threads while training (0 = 1: privfl's small models run "
               "fastest on one thread, and a busy core does not stall every step; run clients "
               "side by side with --execution instead)",
    "audit": "plant canaries and audit the run empirically (privfl audit turns this on): "
             "a canary estimate, a one-run lower bound and a membership attack beside the "
             "accountant's epsilon",
    "audit_unit": "what the audit randomises: client (canary clients) or example (canary "
                  "records); auto follows the DP mode",
    "canaries": "number of canaries m, each inserted with probability 1/2 (0 = 128 clients or "
                "256 examples)",
    "audit_confidence": "confidence 1 - beta of the audit's lower bounds",
    "canary_norm": "norm of a canary client's update when the run does not clip updates",
    "holdout_clients": "clients held out of the federation as non-members for the client-level "
                       "membership attack (0 = max(20, clients/10))",
    "seed": "seed for data split, sampling, initialisation and batch order",
    "out": "parent directory of run directories",
    "name": "run directory name (default: timestamp-dataset-secure)",
}


def _run_parser(sub: Any, name: str = "run") -> argparse.ArgumentParser:
    if name == "run":
        helptext = "train a federated model and write a run directory"
        description = ("Train FedAvg on embedded data and write config.toml, history.json and "
                       "plot.png into a new run directory. With no options: digits, 10 "
                       "clients, Dirichlet(0.5) label skew, plain secure sum.")
    else:
        helptext = "train with planted canaries and audit the run empirically"
        description = ("Like `privfl run --audit`: plant canaries (canary clients for "
                       "client-level DP, canary records otherwise), train, and report beside "
                       "the accountant's epsilon: Andrew et al.'s one-shot canary estimate "
                       "(client level), Steinke et al.'s one-run lower bound and a "
                       "loss-threshold membership attack. Findings go into the privacy report; "
                       "raw scores into audit.json.")
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=helptext, description=description,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                   help="TOML file with any of the options below (keys as the flag names)")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bar")
    p.add_argument("--overwrite", action="store_true", default=argparse.SUPPRESS,
                   help="replace an earlier run of the same --name (its files are removed "
                        "first); without it a taken name is refused")
    if name == "run":
        p.add_argument("--resume", type=Path, default=argparse.SUPPRESS, metavar="RUN_DIR",
                       help="continue an interrupted run from its checkpoint to its planned "
                            "rounds, with the configuration in RUN_DIR/config.toml (only "
                            "--threads and --quiet may be given with it)")
    for f in fields(RunConfig):
        if name == "audit" and f.name == "audit":
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default
        kw: dict[str, Any] = {"default": argparse.SUPPRESS, "help": _HELP[f.name]}
        if isinstance(default, bool):
            kw["action"] = argparse.BooleanOptionalAction
            kw["help"] += f" (default: {'on' if default else 'off'})"
        elif isinstance(default, enum.Enum):
            kw["choices"] = [m.value for m in type(default)]
            kw["help"] += f" (default: {default.value})"
        else:
            kw["type"] = type(default)
            kw["help"] += f" (default: {default!r})"
        p.add_argument(flag, **kw)
    return p


def _progress_run(cfg: RunConfig, quiet: bool, overwrite: bool = False,
                  resume: Path | None = None) -> Any:
    kw: dict[str, Any] = {"overwrite": overwrite}
    if resume is not None:
        kw.update(resume=True, run_dir=resume)
    if quiet:
        return run_experiment(cfg, **kw)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task("accuracy -", total=cfg.rounds)

        def on_round(rec: Any) -> None:
            acc = rec.test_accuracy
            bar.update(task, completed=rec.round_id,
                       description=f"accuracy {acc:.3f}" if acc == acc else "")

        result = run_experiment(cfg, on_round=on_round, **kw)
        bar.update(task, completed=cfg.rounds)
    return result


def _report(run_dir: Path, *, as_json: bool) -> int:
    from privfl.accounting.report import PrivacyReport

    path = run_dir / "privacy_report.json"
    status = run_dir / "status.json"
    if not path.is_file() and status.is_file():
        try:
            raw = json.loads(status.read_text())
            state, reason = str(raw["status"]), str(raw.get("reason", ""))
        except (ValueError, KeyError, TypeError):
            state, reason = "unreadable", ""
        print(f"privfl: error: the run in {run_dir} is {state}"
              + (f" ({reason})" if reason else "") + ": it wrote no privacy report",
              file=sys.stderr)
        return 2
    if not path.is_file():
        print(f"privfl: error: {path} does not exist (is {run_dir} a run directory?)",
              file=sys.stderr)
        return 2
    try:
        report = PrivacyReport.load(path)
    except (ValueError, KeyError, TypeError) as exc:
        print(f"privfl: error: {path} is not a privacy report: {exc}", file=sys.stderr)
        return 2
    print(report.to_json() if as_json else report.to_markdown(), end="")
    return 0


def _bench_parser(sub: Any) -> None:
    p = sub.add_parser(
        "bench", help="run a benchmark suite (privacy against accuracy, audits, costs)",
        description="Run a sweep of cells (mechanism x epsilon x data set x partition x secure "
                    "sum x seed) defined in TOML; a finished cell is not run again. Writes one "
                    "JSON per cell, results.md, summary.json and plots into OUT/SUITE.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("suite", nargs="?", help="built-in suite name or a .toml file")
    p.add_argument("--list", action="store_true", help="list the built-in suites and exit")
    p.add_argument("--quick", action="store_true",
                   help="the suite's quick variant (about 3 minutes on 2 cores)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"),
                   help="parent directory of the suite's results")
    p.add_argument("--jobs", type=int, default=0,
                   help="worker processes (0: the suite's setting, else one per core)")
    p.add_argument("--rerun", action="store_true", help="run finished cells again")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _bench(args: dict[str, Any]) -> int:
    from privfl.bench.runner import run_suite
    from privfl.bench.suite import builtin_suites, load_suite

    if args["list"] or not args["suite"]:
        print("\n".join(builtin_suites()))
        return 0 if args["list"] else 2
    suite = load_suite(args["suite"], quick=bool(args["quick"]))
    if args["quick"]:
        suite = dataclasses.replace(suite, name=f"{suite.name}-quick")
    run = run_suite(suite, args["out"], jobs=int(args["jobs"]), rerun=bool(args["rerun"]),
                    progress=not args["quiet"])
    print(f"{suite.name}: {run.ran} cells run, {run.skipped} already done, "
          f"{len(run.failed)} failed, {run.seconds:.0f} s")
    for f in run.failed:
        print(f"failed: {f}", file=sys.stderr)
    for path in run.files:
        print(f"wrote {path}")
    return 1 if run.failed else 0


def _check_out(out: str) -> None:
    """Refuse an unusable ``--out`` before anything starts (one line, not a traceback)."""
    path = Path(out)
    try:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(20, "it is a file, not a directory")
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".privfl-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        raise ConfigurationError(
            f"cannot use --out {out!r}: {exc.strerror or exc}. Tip: give a writable "
            "directory (it is created if missing).") from exc


def _resume_config(run_dir: Path, args: dict[str, Any], config_path: Any,
                   overwrite: bool) -> RunConfig:
    """The configuration of the run to resume (``--threads`` may change, nothing else)."""
    others = sorted(k for k in args if k != "threads")
    if others or config_path is not None or overwrite:
        given = [f"--{k.replace('_', '-')}" for k in others]
        given += ["--config"] * (config_path is not None) + ["--overwrite"] * overwrite
        raise ConfigurationError(
            f"--resume continues the run as configured in {run_dir}/config.toml; it takes only "
            f"--threads and --quiet. Found {', '.join(given)}.")
    if not (run_dir / "config.toml").is_file():
        raise ConfigurationError(f"{str(run_dir)!r} is not a privfl run directory (it has no "
                                 "config.toml).")
    return RunConfig.from_toml(run_dir / "config.toml", overrides=args)


def _one_line_warning(message: Warning | str, category: type[Warning], *args: Any,
                      **kwargs: Any) -> None:
    print(f"privfl: warning: {message}", file=sys.stderr, flush=True)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (not the whole usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}. `{self.prog} --help` lists the "
                     "options.\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``privfl`` console script; returns the exit status."""
    parser = _Parser(prog="privfl", description="Privacy-preserving federated "
                     "learning: FedAvg with DP, CKKS and secure aggregation.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _run_parser(sub)
    _run_parser(sub, "audit")
    _bench_parser(sub)
    rep = sub.add_parser("report", help="print the privacy report of a run directory",
                         description="Print the Markdown privacy report of a run directory.")
    rep.add_argument("run_dir", type=Path, help="directory written by `privfl run`")
    rep.add_argument("--json", action="store_true", help="print the JSON report instead")
    args = vars(parser.parse_args(argv))
    if args.pop("version"):
        from privfl import __version__

        print(__version__)
        return 0
    command = args.pop("command")
    if command is None:
        parser.print_help()
        return 2
    if command == "report":
        return _report(args["run_dir"], as_json=bool(args["json"]))
    if command == "bench":
        try:
            return _bench(args)
        except PrivflError as exc:
            print(f"privfl: error: {exc}", file=sys.stderr)
            return 2
    if command == "audit":
        args["audit"] = True
    quiet = bool(args.pop("quiet", False))
    overwrite = bool(args.pop("overwrite", False))
    resume: Path | None = args.pop("resume", None)
    from privfl.resume import RunInterrupted

    try:
        config_path = args.pop("config", None)
        if resume is not None:
            cfg = _resume_config(resume, args, config_path, overwrite)
        elif config_path is not None:
            cfg = RunConfig.from_toml(config_path, overrides=args)
        else:
            cfg = RunConfig.from_mapping(args)
        if resume is None:
            _check_out(cfg.out)
        with warnings.catch_warnings():
            warnings.showwarning = _one_line_warning
            result = _progress_run(cfg, quiet, overwrite, resume)
    except PrivflError as exc:
        print(f"privfl: error: {exc}", file=sys.stderr)
        return 2
    except RunInterrupted as exc:
        print(f"privfl: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("privfl: interrupted; the run directory's status.json says so (no checkpoint "
              "to resume from yet)", file=sys.stderr)
        return 130
    h = result.history
    print(f"final test accuracy {h.final_accuracy:.4f} after {len(h.rounds)} rounds")
    for u in result.report.units if result.report else []:
        if u.client is None or u is result.report.worst_example():
            print(f"privacy: {u.unit}: epsilon {u.epsilon:.4g} at delta {u.delta:g} "
                  f"({u.accountant})" + ("  [worst client]" if u.client is not None else ""))
    for a in result.report.audits if result.report else []:
        conf = "" if a.confidence is None else f" at {a.confidence:.0%} confidence"
        eps = "inf" if a.accountant_epsilon == float("inf") else f"{a.accountant_epsilon:.4g}"
        print(f"audit ({a.unit_kind}, {a.threat_model}): {a.method}: {a.kind.value} "
              f"epsilon {a.value:.4g}{conf} (accountant: {eps})")
    if h.stopped_early:
        print(f"stopped early: {h.stopped_early}")
    aborted = [r.round_id for r in h.rounds if r.aborted]
    if aborted:
        print(f"rounds without an update: {aborted}")
    print(f"run directory: {result.run_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
