"""The malicious-server cost benchmark runs and measures exact sums at the derived parameters."""

from __future__ import annotations

import argparse

from benchmarks import secagg_malicious


def test_quick_benchmark_compares_the_modes_on_the_same_vectors() -> None:
    out = secagg_malicious.run(argparse.Namespace(quick=True, repeats=1))
    (row,) = out["results"]
    semi, mal = row["secagg+"], row["secagg+ malicious"]
    assert mal["threshold"] > semi["threshold"] and mal["degree"] >= semi["degree"]
    assert 2 * mal["threshold"] > mal["degree"] + 1 + row["clients"] // 3
    # both modes drop the same clients at the same point (after sharing keys)
    assert semi["contributors"] == mal["contributors"] == row["clients"] - 2
    for name in ("plain", "secagg+", "secagg+ malicious"):
        assert row[name]["max_abs_error"] < 1e-4
        assert row[name]["server_s"] > 0
