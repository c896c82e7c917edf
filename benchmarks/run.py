"""Run a benchmark and write its stamped JSON, or a privfl bench suite.

    python -m benchmarks.run fedavg_round [--repeats N] [--quick] [--out DIR]
    python -m benchmarks.run privacy-accuracy [--quick] [--jobs N] [--out DIR]

The suites (privacy-accuracy, centralized-baseline, costs) are the same as ``privfl bench
SUITE``: resumable sweeps with tables and plots under OUT/SUITE.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ._stamp import write_result

BENCHMARKS = ["ckks", "dp_overhead", "fedavg_round", "scale", "secagg", "secagg_derived",
              "secagg_malicious"]
SUITES = ["centralized-baseline", "costs", "privacy-accuracy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("name", choices=BENCHMARKS + SUITES)
    p.add_argument("--repeats", type=int, default=0, help="override the configured repeats")
    p.add_argument("--quick", action="store_true", help="smallest sizes only (a smoke test)")
    p.add_argument("--jobs", type=int, default=0, help="suites: worker processes (0: auto)")
    p.add_argument("--clients", type=int, nargs="*", default=None,
                   help="secagg_derived: only these n")
    p.add_argument("--dims", type=int, nargs="*", default=None, help="secagg_derived: only these d")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    if args.name in SUITES:
        from privfl.cli import main as privfl_main

        argv = ["bench", args.name, "--out", str(args.out), "--jobs", str(args.jobs)]
        raise SystemExit(privfl_main(argv + (["--quick"] if args.quick else [])))
    module = importlib.import_module(f"benchmarks.{args.name}")
    payload = module.run(args)
    print(f"wrote {write_result(args.name, payload, args.out)}")


if __name__ == "__main__":
    main()
