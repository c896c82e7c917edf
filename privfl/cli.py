"""The ``privfl`` command line: ``privfl run`` trains a federated model and writes a run directory.

Every option of ``privfl run`` is a flag and can also come from a TOML file (``--config``); flags
given on the command line win over the file, the file over the defaults.
"""

from __future__ import annotations

import argparse
import enum
import sys
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

from privfl.errors import PrivflError
from privfl.experiment import RunConfig, run_experiment

__all__ = ["main"]

_HELP: dict[str, str] = {
    "dataset": "embedded data set: scikit-learn's bundled digits, or generated Synthetic(a, b)",
    "model": "model: mlp/cnn for digits, logreg for synthetic; auto picks by data set",
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
    "seed": "seed for data split, sampling, initialisation and batch order",
    "out": "parent directory of run directories",
    "name": "run directory name (default: timestamp-dataset-secure)",
}


def _run_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "run", help="train a federated model and write a run directory",
        description="Train FedAvg on embedded data and write config.toml, history.json and "
                    "plot.png into a new run directory. With no options: digits, 10 clients, "
                    "Dirichlet(0.5) label skew, plain secure sum.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, default=argparse.SUPPRESS,
                   help="TOML file with any of the options below (keys as the flag names)")
    p.add_argument("--quiet", action="store_true", default=argparse.SUPPRESS,
                   help="no progress bar")
    for f in fields(RunConfig):
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


def _progress_run(cfg: RunConfig, quiet: bool) -> Any:
    if quiet:
        return run_experiment(cfg)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]round"), MofNCompleteColumn(), BarColumn(),
                  TextColumn("{task.description}"), TimeElapsedColumn(), transient=False) as bar:
        task = bar.add_task("accuracy -", total=cfg.rounds)

        def on_round(rec: Any) -> None:
            acc = rec.test_accuracy
            bar.update(task, advance=1, description=f"accuracy {acc:.3f}" if acc == acc else "")

        result = run_experiment(cfg, on_round=on_round)
        bar.update(task, completed=cfg.rounds)
    return result


def _report(run_dir: Path, *, as_json: bool) -> int:
    from privfl.accounting.report import PrivacyReport

    path = run_dir / "privacy_report.json"
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


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``privfl`` console script; returns the exit status."""
    parser = argparse.ArgumentParser(prog="privfl", description="Privacy-preserving federated "
                                     "learning: FedAvg with DP, CKKS and secure aggregation.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    _run_parser(sub)
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
    quiet = bool(args.pop("quiet", False))
    try:
        config_path = args.pop("config", None)
        if config_path is not None:
            cfg = RunConfig.from_toml(config_path, overrides=args)
        else:
            cfg = RunConfig.from_mapping(args)
        result = _progress_run(cfg, quiet)
    except PrivflError as exc:
        print(f"privfl: error: {exc}", file=sys.stderr)
        return 2
    h = result.history
    print(f"final test accuracy {h.final_accuracy:.4f} after {len(h.rounds)} rounds")
    for u in result.report.units if result.report else []:
        if u.client is None or u is result.report.worst_example():
            print(f"privacy: {u.unit}: epsilon {u.epsilon:.4g} at delta {u.delta:g} "
                  f"({u.accountant})" + ("  [worst client]" if u.client is not None else ""))
    if h.stopped_early:
        print(f"stopped early: {h.stopped_early}")
    aborted = [r.round_id for r in h.rounds if r.aborted]
    if aborted:
        print(f"rounds without an update: {aborted}")
    print(f"run directory: {result.run_dir}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
