"""Cost of the malicious-server mode of pairwise masking, beside the semi-honest one and plain.

For each n (with k and t derived from γ = 1/3, δ = 0.2 for the semi-honest and the malicious
server: the latter needs 2t > k + 1 + ⌊γn⌋ and k > ⌊γn⌋ + ⌊δn⌋), 10% of the clients dropped
after sharing keys (their masks must be removed), the same vectors in the same run: the
server's time over all stages, the median client time, bytes up and down per client. Medians
over the configured repeats (``--repeats`` overrides).

    python -m benchmarks.run secagg_malicious            # n = 100 (d = 10⁶), n = 1000 (d = 10⁴)
    python -m benchmarks.run secagg_malicious --quick    # n = 20, d = 10⁴
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import numpy as np

from privfl.core.securesum import PlainSecureSum
from privfl.secagg.identity import provision_identities
from privfl.secagg.pairwise import PairwiseSecureSum

from .secagg import _one

# (n, d, repeats): n = 1000 in the malicious mode has k = 534, t = 387, and Shamir over
# GF(2^521 - 1) in Python dominates it (issue 14 replaces that), so it runs once
CONFIG: dict[str, Any] = {"cases": [(100, 1_000_000, 3), (1000, 10_000, 1)],
                          "drop_fraction": 0.1}


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(CONFIG)
    if args.quick:
        cfg["cases"] = [(20, 10_000, 1)]
    override = int(getattr(args, "repeats", 0) or 0)
    rng = np.random.default_rng(0)
    results = []
    for n, d, configured in cfg["cases"]:
        repeats = override or configured
        values = [rng.uniform(-1, 1, d).astype(np.float32) for _ in range(n)]
        victims = set(range(1, 1 + max(1, round(cfg["drop_fraction"] * n))))
        book = provision_identities(range(n))
        sums: dict[str, Any] = {
            "plain": PlainSecureSum(),
            "secagg+": PairwiseSecureSum(sparse=True),
            "secagg+ malicious": PairwiseSecureSum(sparse=True, identities=book)}
        row: dict[str, Any] = {"clients": n, "dim": d, "dropped_before_upload": len(victims)}
        for name, secure in sums.items():
            # dropped at the masked-input request, after sharing keys: stage 2, or 3 where the
            # malicious SecAgg+ round opens with its graph-nonce exchange
            stage = 3 if getattr(secure, "malicious", False) and secure.sparse else 2
            drops = {} if name == "plain" else {stage: victims}
            runs = [_one(secure, values, drops) for _ in range(repeats)]
            r = {key: statistics.median(x[key] for x in runs)
                 for key in ("server_s", "client_s_median", "bytes_up_per_client",
                             "bytes_down_per_client", "max_abs_error", "contributors")}
            r["repeats"] = repeats
            if hasattr(secure, "plan"):
                p = secure.plan(n)
                r.update(degree=p.degree, threshold=p.threshold, p_reveal=p.p_reveal,
                         p_split=p.p_split, p_abort=p.p_abort)
            row[name] = r
        base = row["secagg+"]
        for name in ("plain", "secagg+", "secagg+ malicious"):
            r = row[name]
            r["server_vs_plain"] = r["server_s"] / row["plain"]["server_s"]
            r["server_vs_semi_honest"] = r["server_s"] / base["server_s"]
            r["client_vs_semi_honest"] = r["client_s_median"] / base["client_s_median"]
            kt = f"k={r['degree']:4d} t={r['threshold']:4d}" if "degree" in r else " " * 13
            print(f"n={n:5d} d={d:>9,d} {name:18s} {kt} server {r['server_s']:8.3f} s "
                  f"(x{r['server_vs_plain']:7.1f} plain, x{r['server_vs_semi_honest']:5.2f} "
                  f"semi-honest)  client {r['client_s_median']:.3f} s  up "
                  f"{r['bytes_up_per_client']:,.0f} B  down {r['bytes_down_per_client']:,.0f} B")
        results.append(row)
    return {"config": cfg, "results": results}
