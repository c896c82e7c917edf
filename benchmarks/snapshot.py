"""Copy the committed benchmark snapshot into the documentation's Benchmarks page.

    python -m benchmarks.snapshot [--results benchmarks/results] [--docs docs]

Reads ``results.md`` and the plots of the ``privacy-accuracy`` and ``costs`` suites, writes
``docs/benchmarks.md`` (how to reproduce, then each suite's tables) and copies the plots to
``docs/img/benchmarks/``.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

SUITES = {
    "privacy-accuracy": ("Privacy against accuracy, with the audit",
                         ["accuracy_vs_epsilon.png", "audit_vs_epsilon.png"]),
    "costs": ("What each layer costs", ["costs_per_round.png"]),
}

HEADER = """# Benchmarks

A snapshot of privfl's benchmark suites, run on this project's 2-core machine at the commit
each suite's provenance names (a `-dirty` suffix means tracked files differed from it when the
run started); every cell's JSON (configuration, numbers, raw audit scores, and a stamp with the
git SHA, package versions and hardware) is committed under `benchmarks/results/`.

Reproduce it with

```bash
privfl bench privacy-accuracy     # 213 cells: 26 min 43 s on 2 cores (2 worker processes)
privfl bench costs                # cells one at a time, so that timings do not share cores
python -m benchmarks.snapshot     # this page, from benchmarks/results/
```

A finished cell is not run again: an interrupted run resumes where it stopped, and `--rerun`
starts afresh. Cells use seeded randomness (`secure_randomness = false`): the same seed gives the
same numbers on any CPU run, which is what a benchmark needs; those runs' privacy reports say that
their guarantee does not hold against anyone who knows the seed. The
[tutorial](tutorials/measure-privacy-costs.md) runs the quick variant and explains how to read
the tables; [Empirical privacy audits](explanation/audits.md) explains the audit columns.
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("benchmarks/results"))
    p.add_argument("--docs", type=Path, default=Path("docs"))
    args = p.parse_args()
    img = args.docs / "img" / "benchmarks"
    img.mkdir(parents=True, exist_ok=True)
    parts = [HEADER]
    for suite, (title, plots) in SUITES.items():
        md = args.results / suite / "results.md"
        if not md.is_file():
            raise SystemExit(f"{md} is missing: run `privfl bench {suite}` first")
        body = md.read_text().split("\n", 1)[1]  # drop the suite's own title
        body = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", body, flags=re.M)
        parts.append(f"## {title} (`{suite}`)\n")
        for name in plots:
            src = args.results / suite / name
            if src.is_file():
                shutil.copyfile(src, img / name)
                parts.append(f"![{name}](img/benchmarks/{name})\n")
        parts.append(body)
    out = args.docs / "benchmarks.md"
    out.write_text("\n".join(parts))
    print(f"wrote {out} and {img}/")


if __name__ == "__main__":
    main()
