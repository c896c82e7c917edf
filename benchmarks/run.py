"""Run a benchmark and write its stamped JSON.

    python -m benchmarks.run fedavg_round [--repeats N] [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from ._stamp import write_result

BENCHMARKS = ["ckks", "dp_overhead", "fedavg_round", "scale", "secagg"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("name", choices=BENCHMARKS)
    p.add_argument("--repeats", type=int, default=0, help="override the configured repeats")
    p.add_argument("--quick", action="store_true", help="smallest sizes only (a smoke test)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = p.parse_args()
    module = importlib.import_module(f"benchmarks.{args.name}")
    payload = module.run(args)
    print(f"wrote {write_result(args.name, payload, args.out)}")


if __name__ == "__main__":
    main()
