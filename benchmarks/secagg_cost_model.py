"""SecAgg+ cost per round on paper, from n = 10⁴ to 10⁶, calibrated by ``secagg_derived``.

Reads the newest ``secagg_derived-*.json`` (or the file given) and prints a Markdown table for
d = 10⁶ parameters, 10% of the clients dropped before the masked upload, (γ, δ) = (1/3, 0.2)
and k, t from :func:`~privfl.secagg.params.find_params`. The model, per round:

* parallel server work (shardable over cores and Ray workers, bit-identical):
  keystream words W = (s + D·k_s)·d for s = 0.9n survivors, D = 0.1n dropped clients and
  k_s = 0.9k surviving neighbours each, at c_w seconds per word (ChaCha20 + ring subtraction);
  A = D·k_s X25519 agreements at c_a seconds each; Shamir over S = s + D secrets of threshold t,
  c_sh·S·t² (vectorized word arithmetic);
* serial server work (message decoding, validation, share routing, folding uploads):
  a·n·k + b·n·d, fitted to the measured server time less its parallel part at n = 100 and
  n = 1000 (d = 10⁵);
* bytes per client: up c_d·d + k·c_up + e_up, down k·c_down + e_down, fitted to the measured
  bytes (c_d from d = 10⁵ and 10⁶ at n = 100; c_up and c_down from n = 100 and 1000).

c_w, c_a and c_sh are the floor's and the run's own measurements (one core of the machine that
ran the suite). "Cores for a 60 s round" is the parallel work divided by (60 s − serial work);
a Ray worker is one core.

    python -m benchmarks.secagg_cost_model [results.json]
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from privfl.secagg.params import find_params

SIZES = [1_000, 10_000, 100_000, 1_000_000]
DIM = 1_000_000
BUDGET_S = 60.0


def _latest(root: Path) -> Path:
    files = sorted(root.glob("secagg_derived-*.json"))
    if not files:
        raise SystemExit(f"no secagg_derived-*.json under {root}: run "
                         "`python -m benchmarks.run secagg_derived` first")
    return files[-1]


def calibrate(results: list[dict[str, Any]]) -> dict[str, float]:
    """Unit costs from the rows at (γ, δ) = (1/3, 0.2)."""
    rows = {(r["clients"], r["dim"]): r for r in results if r["collusion"] > 0.3}
    big = rows[(1000, 100_000)]
    fl = big["floor"]
    c_w = fl["masks_s"] / (fl["masks"] * big["dim"])
    c_a = fl["agreements_s"] / fl["agreements"]
    # serial part = server − parallel part; solve a·n·k + b·n·d at n = 100 and 1000 (d = 10⁵)
    pts = []
    for n in (100, 1000):
        r = rows[(n, 100_000)]
        serial = r["server_s_one_core"] - r["parallel_part_s"]["one_core"]
        pts.append((n * r["k"], n * r["dim"], max(serial, 0.0)))
    (x1, y1, s1), (x2, y2, s2) = pts
    det = x1 * y2 - x2 * y1
    a = max((s1 * y2 - s2 * y1) / det, 0.0)
    b = max((x1 * s2 - x2 * s1) / det, 0.0)
    # bytes: up = c_d·d + c_up·k + e_up (c_d from the two dims at n = 100), down = c_down·k + e
    r1, r2 = rows[(100, 100_000)], rows[(1000, 100_000)]
    r1d = rows[(100, 1_000_000)]
    c_d = (r1d["bytes_up_per_client"] - r1["bytes_up_per_client"]) / (r1d["dim"] - r1["dim"])
    c_up = ((r2["bytes_up_per_client"] - r1["bytes_up_per_client"])
            - c_d * (r2["dim"] - r1["dim"])) / (r2["k"] - r1["k"])
    e_up = r1["bytes_up_per_client"] - c_d * r1["dim"] - c_up * r1["k"]
    c_down = (r2["bytes_down_per_client"] - r1["bytes_down_per_client"]) / (r2["k"] - r1["k"])
    e_down = r1["bytes_down_per_client"] - c_down * r1["k"]
    # Shamir: what the parallel part holds beyond masks and agreements, per S·t²
    par = big["parallel_part_s"]["one_core"]
    s_secrets = fl["masks"] - fl["agreements"] + big["dropped"]
    c_sh = max(par - fl["masks_s"] - fl["agreements_s"], 0.0) / (s_secrets * big["t"] ** 2)
    return {"c_w": c_w, "c_a": c_a, "c_sh": c_sh, "a": a, "b": b, "c_d": c_d, "c_up": c_up,
            "e_up": e_up, "c_down": c_down, "e_down": e_down}


def project(n: int, d: int, c: dict[str, float]) -> dict[str, Any]:
    """One round at n clients and d parameters."""
    p = find_params(n, collusion=1 / 3, dropout=0.2)
    k, t = p.degree, p.threshold
    dropped = round(0.1 * n)
    survivors = n - dropped
    k_s = 0.9 * k
    words = (survivors + dropped * k_s) * d
    agreements = dropped * k_s
    parallel = words * c["c_w"] + agreements * c["c_a"] + c["c_sh"] * (survivors + dropped) * t**2
    serial = c["a"] * n * k + c["b"] * n * d
    up = c["c_d"] * d + k * c["c_up"] + c["e_up"]
    down = k * c["c_down"] + c["e_down"]
    room = BUDGET_S - serial
    cores = math.inf if room <= 0 else max(1, math.ceil(parallel / room))
    return {"n": n, "k": k, "t": t, "parallel_core_s": parallel, "serial_s": serial,
            "core_s": parallel + serial, "up_MB": up / 1e6, "down_kB": down / 1e3,
            "server_GB_in": n * up / 1e9, "cores_60s": cores}


def table(results: list[dict[str, Any]]) -> str:
    """The Markdown table of :func:`project` for :data:`SIZES`."""
    c = calibrate(results)
    lines = ["| n | k | t | server core-s | of which parallel | serial s | up per client "
             "| down per client | into the server | cores (= Ray workers) for a 60 s round |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for n in SIZES:
        r = project(n, DIM, c)
        cores = "serial part alone exceeds 60 s" if math.isinf(r["cores_60s"]) \
            else f"{r['cores_60s']:,}"
        lines.append(f"| {n:,} | {r['k']} | {r['t']} | {r['core_s']:,.0f} | "
                     f"{r['parallel_core_s']:,.0f} | {r['serial_s']:,.1f} | "
                     f"{r['up_MB']:.2f} MB | {r['down_kB']:.0f} kB | "
                     f"{r['server_GB_in']:,.1f} GB | {cores} |")
    units = (f"Calibration: c_w = {c['c_w'] * 1e9:.3f} ns per keystream word, c_a = "
             f"{c['c_a'] * 1e6:.1f} µs per agreement, c_sh = {c['c_sh'] * 1e9:.3f} ns per "
             f"secret·t², serial a = {c['a'] * 1e6:.2f} µs per client·neighbour and b = "
             f"{c['b'] * 1e9:.3f} ns per client·parameter; bytes up {c['c_d']:.3f}·d + "
             f"{c['c_up']:.0f}·k + {c['e_up']:.0f}, down {c['c_down']:.0f}·k + "
             f"{c['e_down']:.0f}.")
    return "\n".join(lines) + "\n\n" + units + "\n"


def measured(results: list[dict[str, Any]]) -> str:
    """The suite's rows as a Markdown table (medians)."""
    lines = ["| n | d | γ, δ | k | t | server 1 core | floor | ÷ floor | all cores | speed-up "
             "| client | up / down per client | peak traced | Flower's server |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        fl = r.get("flower_secaggplus", {})
        flower = (f"{fl['server_s']:.1f} s ({r['privfl_speedup_over_flower']:.0f}× slower)"
                  if "server_s" in fl else "")
        peak = f"{r['peak_traced_mib']:.0f} MiB" if r.get("peak_traced_mib") else "—"
        lines.append(
            f"| {r['clients']:,} | {r['dim']:,} | {r['collusion']:.2g}, {r['dropout']:.2g} | "
            f"{r['k']} | {r['t']} | {r['server_s_one_core']:.3f} s | "
            f"{r['floor']['floor_s']:.3f} s | {r['server_vs_floor']:.2f} | "
            f"{r['server_s_all_cores']:.3f} s | {r['all_cores_speedup']:.2f}× | "
            f"{r['client_s_median']:.3f} s | {r['bytes_up_per_client'] / 1e6:.2f} MB / "
            f"{r['bytes_down_per_client'] / 1e3:.0f} kB | {peak} | {flower} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else _latest(Path("benchmarks/results"))
    payload = json.loads(path.read_text())
    results = payload.get("results", payload.get("payload", {}).get("results"))
    print(f"<!-- from {path.name} -->")
    print(measured(results))
    print(table(results))


if __name__ == "__main__":
    main()
