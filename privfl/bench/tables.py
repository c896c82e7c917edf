"""A suite's results as a researcher would put them in a paper: tables, a summary and plots.

From the finished cells of a suite this writes, into the suite's directory:

* ``results.md`` — accuracy at each ε per mechanism, data set and secure sum (mean ± std over
  seeds, the centralized baseline in the same table); the empirical audit beside the
  accountant's ε; how far the secure sums are from the plain sum; cost per round per layer
  with ratios against the unprotected run of the same model; the stamps (git SHA, versions,
  hardware) the cells were produced with;
* ``summary.json`` — the same aggregates, machine-readable;
* ``accuracy_vs_epsilon.png`` (mean line, min–max band over seeds), ``audit_vs_epsilon.png``
  and ``costs_per_round.png``, for the parts the suite has.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from privfl.bench.suite import CellKind, Suite

__all__ = ["aggregate", "write_tables"]


def _f(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if math.isinf(x):
        return "∞"
    return f"{x:.{digits}f}"


def _eps_key(e: float) -> tuple[int, float]:
    return (1, 0.0) if math.isinf(e) else (0, e)


def _stats(values: list[float]) -> dict[str, Any]:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    if not vals:
        return {"n": 0, "mean": math.nan, "std": math.nan, "min": math.nan, "max": math.nan}
    return {"n": len(vals), "mean": statistics.fmean(vals),
            "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "min": min(vals), "max": max(vals)}


def _finding(record: dict[str, Any], prefix: str, threat: str | None = None
             ) -> dict[str, Any] | None:
    for f in record["result"].get("findings", []):
        if f["method"].startswith(prefix) and threat in (None, f["threat_model"]):
            return dict(f)
    return None


def aggregate(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy, audit and cost rows of finished cells, grouped over seeds."""
    acc: dict[tuple[Any, ...], list[dict[str, Any]]] = defaultdict(list)
    costs: list[dict[str, Any]] = []
    for r in records:
        lab = r["labels"]
        if r["kind"] == CellKind.COSTS.value:
            costs.append({**lab, **{k: v for k, v in r["result"].items() if k != "per_round"}})
            continue
        acc[(lab["dataset"], lab["mechanism"], lab["mechanism_label"], lab["secure"],
             float(lab["epsilon"]), r["kind"])].append(r)
    rows = []
    for (ds, mech, label, secure, eps, kind), cells in sorted(
            acc.items(), key=lambda kv: (kv[0][0], kv[0][5], kv[0][1], kv[0][3],
                                         _eps_key(kv[0][4]))):
        res = [c["result"] for c in cells]
        row: dict[str, Any] = {
            "dataset": ds, "mechanism": mech, "label": label, "secure": secure,
            "epsilon": eps, "kind": kind, "seeds": sorted(c["labels"]["seed"] for c in cells),
            "accuracy": _stats([x["accuracy"] for x in res]),
            "accountant_epsilon": _stats([x.get("accountant_epsilon", math.inf) for x in res]),
            "accountant_epsilon_max": max(x.get("accountant_epsilon", math.inf) for x in res),
            "seconds": _stats([c["seconds"] for c in cells]),
            "round_seconds": _stats([x.get("round_seconds_median", math.nan) for x in res]),
            "bytes_up_per_client": _stats([x.get("bytes_up_per_client", math.nan)
                                           for x in res]),
            "bytes_down_per_client": _stats([x.get("bytes_down_per_client", math.nan)
                                             for x in res]),
        }
        for key, prefix, threat in (("one_run", "one-run", "final model"),
                                    ("one_run_all", "one-run", "all iterates"),
                                    ("mia", "loss-threshold", None),
                                    ("estimate_final", "one-shot", "final model"),
                                    ("estimate_all", "one-shot", "all iterates")):
            found = [f for f in (_finding(c, prefix, threat) for c in cells) if f is not None]
            if found:
                row[key] = {"value": _stats([f["value"] for f in found]),
                            "max": max(f["value"] for f in found), "kind": found[0]["kind"],
                            "confidence": found[0]["confidence"]}
                if key.startswith("one_run"):
                    row[key]["canary_auc"] = _stats(
                        [f["details"].get("canary_auc", math.nan) for f in found])
                if key == "mia":
                    row[key]["auc"] = _stats([f["details"]["auc"] for f in found])
                    row[key]["tpr_at_1pct_fpr"] = _stats(
                        [f["details"]["tpr_at_1pct_fpr"] for f in found])
                if key.startswith("estimate"):
                    row[key]["mean_z"] = _stats([f["details"]["mean_z"] for f in found])
        rows.append(row)
    return {"accuracy": rows, "agreement": _agreement(acc), "costs": costs}


def _agreement(acc: dict[tuple[Any, ...], list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per (data set, mechanism, ε): how far each secure sum's cells are from plain's."""
    by_key: dict[tuple[Any, ...], dict[str, dict[int, dict[str, Any]]]] = defaultdict(dict)
    for (ds, mech, _, secure, eps, kind), cells in acc.items():
        if kind != CellKind.FEDERATED.value:
            continue
        by_key[(ds, mech, eps)][secure] = {c["labels"]["seed"]: c["result"] for c in cells}
    out = []
    for (ds, mech, eps), sums in sorted(by_key.items(), key=lambda kv: (kv[0][0], kv[0][1],
                                                                        _eps_key(kv[0][2]))):
        plain = sums.get("plain")
        if plain is None:
            continue
        for secure, per_seed in sorted(sums.items()):
            if secure == "plain":
                continue
            common = sorted(set(per_seed) & set(plain))
            if not common:
                continue
            diffs = [abs(per_seed[s]["accuracy"] - plain[s]["accuracy"]) for s in common]
            rel = [abs(per_seed[s]["final_params_l2"] - plain[s]["final_params_l2"])
                   / max(plain[s]["final_params_l2"], 1e-12) for s in common]
            same = sum(per_seed[s]["final_params_sha256"] == plain[s]["final_params_sha256"]
                       for s in common)
            out.append({"dataset": ds, "mechanism": mech, "epsilon": eps, "secure": secure,
                        "seeds": common, "max_accuracy_difference": max(diffs),
                        "max_relative_params_l2_difference": max(rel),
                        "identical_final_models": same})
    return out


# --- Markdown ---------------------------------------------------------------------------------
def _accuracy_md(rows: list[dict[str, Any]]) -> list[str]:
    out = ["## Accuracy against ε", "",
           "Final test accuracy, mean ± std over seeds (n seeds in brackets where fewer than "
           "all). ε is the accountant's target at δ of the run; ∞ is the non-private run. "
           "Centralized rows train on the pooled data (Opacus DP-SGD, same steps and sampling "
           "rate as one federated client), so the gap to them is the price of federation.", ""]
    for ds in sorted({r["dataset"] for r in rows}):
        mine = [r for r in rows if r["dataset"] == ds]
        epsilons = sorted({r["epsilon"] for r in mine}, key=_eps_key)
        seeds_max = max(r["accuracy"]["n"] for r in mine)
        out += [f"### {ds}", "",
                "| mechanism | secure sum | " + " | ".join(f"ε = {_f(e, 0) if e >= 1 else e}"
                                                          for e in epsilons) + " |",
                "|---|---|" + "---|" * len(epsilons)]
        groups: dict[tuple[str, str, str], dict[float, dict[str, Any]]] = defaultdict(dict)
        for r in mine:
            groups[(r["kind"], r["label"], r["secure"])][r["epsilon"]] = r
        for (kind, label, secure), by_eps in sorted(groups.items()):
            cells = []
            for e in epsilons:
                hit = by_eps.get(e)
                if hit is None:
                    cells.append("")
                    continue
                s = hit["accuracy"]
                n = "" if s["n"] == seeds_max else f" ({s['n']})"
                cells.append(f"{s['mean']:.3f} ± {s['std']:.3f}{n}")
            name = f"{label} (centralized)" if kind == CellKind.CENTRALIZED.value else label
            sec = "—" if kind == CellKind.CENTRALIZED.value else secure
            out.append(f"| {name} | {sec} | " + " | ".join(cells) + " |")
        out.append("")
    return out


def _reference(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows of each (data set, mechanism)'s reference sum: plain where it ran, else the first.

    A mechanism that runs only under secure sums (distributed DP) is shown with its own.
    """
    sums: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in rows:
        sums[(r["dataset"], r["kind"], r["label"])].add(r["secure"])

    def ref(r: dict[str, Any]) -> str:
        have = sums[(r["dataset"], r["kind"], r["label"])]
        return "plain" if "plain" in have else min(have)

    return [r for r in rows if r["kind"] == CellKind.CENTRALIZED.value or r["secure"] == ref(r)]


def _audit_md(rows: list[dict[str, Any]]) -> list[str]:
    audited = [r for r in _reference(rows) if "one_run" in r]
    if not audited:
        return []
    out = ["## Empirical audit beside the accountant's ε", "",
           "Per data set, mechanism and target ε (plain secure sum, or the mechanism's own where "
           "it needs one; the other sums give the same model up to encoding noise): the "
           "accountant's ε (max over seeds), Steinke et al.'s "
           "one-run **lower bound** (max over seeds, 95% confidence; final model, and for canary "
           "clients / all iterates) and how well "
           "the canaries' scores separate planted from unplanted ones (canary AUC: cosines for "
           "canary clients, −loss for canary records), the "
           "loss-threshold membership attack (mean AUC, mean TPR at 1% FPR, max heuristic "
           "bound) and, for client-level units, Andrew et al.'s canary **estimate** (mean; final "
           "model / all iterates) with the inserted canaries' mean z-score. Estimates may exceed "
           "the accountant's ε; lower bounds may not.", "",
           "| data set | mechanism | ε | accountant ε | one-run lower bound | canary AUC | "
           "MIA AUC | TPR@1%FPR | MIA bound (heuristic) | canary estimate final / all | "
           "canary z final / all |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in audited:
        mia = r.get("mia")
        ef, ea = r.get("estimate_final"), r.get("estimate_all")
        est = (f"{_f(ef['value']['mean'], 2)} / {_f(ea['value']['mean'], 2)}"
               if ef and ea else "—")
        z = (f"{_f(ef['mean_z']['mean'], 2)} / {_f(ea['mean_z']['mean'], 2)}"
             if ef and ea else "—")
        name = (f"{r['label']} (centralized)" if r["kind"] == CellKind.CENTRALIZED.value
                else r["label"])
        out.append(
            f"| {r['dataset']} | {name} | {_f(r['epsilon'], 0)} | "
            f"{_f(r['accountant_epsilon_max'], 3)} | {_f(r['one_run']['max'], 3)}"
            + (f" / {_f(r['one_run_all']['max'], 3)}" if "one_run_all" in r else "") + " | "
            f"{_f(r['one_run']['canary_auc']['mean'])} | "
            f"{_f(mia['auc']['mean']) if mia else '—'} | "
            f"{_f(mia['tpr_at_1pct_fpr']['mean']) if mia else '—'} | "
            f"{_f(mia['max'], 3) if mia else '—'} | {est} | {z} |")
    return out + [""]


def _agreement_md(agreement: list[dict[str, Any]]) -> list[str]:
    if not agreement:
        return []
    worst = max(a["max_accuracy_difference"] for a in agreement)
    out = ["## Secure sums against the plain sum", "",
           f"Same seed, same configuration, only the secure sum differs. Largest accuracy "
           f"difference over all {len(agreement)} comparisons: **{worst:.4f}**.", "",
           "| data set | mechanism | ε | secure sum | max Δ accuracy | max relative Δ‖θ‖ | "
           "identical models |", "|---|---|---|---|---|---|---|"]
    for a in agreement:
        out.append(f"| {a['dataset']} | {a['mechanism']} | {_f(a['epsilon'], 0)} | "
                   f"{a['secure']} | {a['max_accuracy_difference']:.4f} | "
                   f"{a['max_relative_params_l2_difference']:.2e} | "
                   f"{a['identical_final_models']}/{len(a['seeds'])} |")
    return out + [""]


def _run_costs_md(rows: list[dict[str, Any]]) -> list[str]:
    fed = [r for r in rows if r["kind"] == CellKind.FEDERATED.value
           and r["round_seconds"]["n"]]
    if not fed:
        return []
    out = ["## Cost per round in these runs", "",
           "Median round time (all clients in one process, training included) and bytes per "
           "client and round, averaged over ε and seeds; `privfl bench costs` separates client "
           "and server time and measures server memory.", "",
           "| data set | mechanism | secure sum | round s | × plain | up B/client | × plain | "
           "down B/client |", "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in fed:
        groups[(r["dataset"], r["label"], r["secure"])].append(r)

    def mean(rs: list[dict[str, Any]], key: str) -> float:
        return statistics.fmean(r[key]["mean"] for r in rs)

    withheld = False
    for (ds, label, secure), rs in sorted(groups.items()):
        base = groups.get((ds, label, "plain"))
        t, up = mean(rs, "round_seconds"), mean(rs, "bytes_up_per_client")
        base_up = mean(base, "bytes_up_per_client") if base else 0.0
        tx = f"{t / mean(base, 'round_seconds'):.2f}" if base else "—"
        if up > 0:
            ux = f"{up / base_up:.2f}" if base_up > 0 else "—"
            up_s, down_s = f"{up:,.0f}", f"{mean(rs, 'bytes_down_per_client'):,.0f}"
        else:  # client-level DP withholds traffic counts (they reveal who took part)
            withheld = True
            ux, up_s, down_s = "—", "withheld*", "withheld*"
        out.append(f"| {ds} | {label} | {secure} | {t:.3f} | {tx} | {up_s} | {ux} | "
                   f"{down_s} |")
    if withheld:
        out += ["", "\\* Client-level DP runs do not record per-round traffic: byte counts reveal "
                "who took part, which the amplification by sampling behind their ε must keep "
                "private. The costs suite measures them outside any DP run."]
    return out + [""]


def _costs_md(costs: list[dict[str, Any]]) -> list[str]:
    if not costs:
        return []
    out = ["## Cost per round per layer", "",
           "Median over the measured rounds (the first round is a warm-up). Client seconds are "
           "per client; bytes per client and round; server memory is the peak allocation "
           "during the server's calls in one traced round. × columns: ratio to the unprotected "
           "run of the same model in the same suite run.", ""]
    for ds in sorted({c["dataset"] for c in costs}):
        mine = [c for c in costs if c["dataset"] == ds]
        base = next((c for c in mine if c["mechanism"] == "none" and c["secure"] == "plain"),
                    None)
        out += [f"### {ds} (d = {mine[0]['dim']:,} parameters, {int(mine[0]['clients'])} "
                "clients per round)", "",
                "| DP | secure sum | round s | × | server s | × | client train s | "
                "client protect s | up B/client | × | down B/client | server peak MiB |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|"]

        def ratio(c: dict[str, Any], key: str, b: dict[str, Any] | None = base) -> str:
            return "—" if b is None or not b[key] else f"{c[key] / b[key]:.2f}"

        for c in sorted(mine, key=lambda c: (c["mechanism"] != "none", c["mechanism"],
                                             c["secure"] != "plain", c["secure"])):
            out.append(
                f"| {c['mechanism_label']} | {c['secure']} | {c['wall_s']:.4f} | "
                f"{ratio(c, 'wall_s')} | {c['server_s']:.4f} | {ratio(c, 'server_s')} | "
                f"{c['client_train_s']:.4f} | {c['client_protect_s']:.4f} | "
                f"{c['bytes_up_per_client']:,.0f} | {ratio(c, 'bytes_up_per_client')} | "
                f"{c['bytes_down_per_client']:,.0f} | "
                f"{c['server_peak_bytes'] / 2**20:.2f} |")
        out.append("")
    return out


def _stamps_md(records: list[dict[str, Any]]) -> list[str]:
    shas = sorted({r["stamp"]["git_sha"] for r in records})
    hw = records[0]["stamp"]["hardware"]
    vers = records[0]["stamp"]["versions"]
    total = sum(r["seconds"] for r in records)
    return ["## Provenance", "",
            f"- cells: {len(records)}, {total / 60:.1f} cell-minutes in total",
            f"- git SHA: {', '.join(shas)}",
            f"- hardware: {hw['cpu']} × {hw['cpu_count']} cores, "
            f"{(hw['memory_bytes'] or 0) / 2**30:.0f} GiB, GPU: {hw['gpu'] or 'none'}; "
            f"{hw['platform']}, Python {hw['python']}",
            "- versions: " + ", ".join(f"{k} {v}" for k, v in vers.items() if v), ""]


# --- plots ----------------------------------------------------------------------------------
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: Path, title: str | None) -> Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _plot_accuracy(rows: list[dict[str, Any]], path: Path) -> Path | None:
    plt = _pyplot()
    datasets = sorted({r["dataset"] for r in rows})
    if not datasets:
        return None
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = [r for r in _reference(rows) if r["dataset"] == ds]
        finite = sorted({r["epsilon"] for r in mine if math.isfinite(r["epsilon"])})
        lines: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
        for r in mine:
            lines[(r["kind"], r["label"])].append(r)
        for (kind, label), pts in sorted(lines.items()):
            style = "--" if kind == CellKind.CENTRALIZED.value else "-"
            name = f"{label} (centralized)" if kind == CellKind.CENTRALIZED.value else label
            pts = sorted(pts, key=lambda r: _eps_key(r["epsilon"]))
            if all(math.isinf(p["epsilon"]) for p in pts):
                s = pts[0]["accuracy"]
                line = ax.axhline(s["mean"], ls=style, lw=1.5, label=f"{name}, ε = ∞")
                ax.axhspan(s["min"], s["max"], color=line.get_color(), alpha=0.12)
                continue
            pts = [p for p in pts if math.isfinite(p["epsilon"])]
            xs = [p["epsilon"] for p in pts]
            line, = ax.plot(xs, [p["accuracy"]["mean"] for p in pts], style, marker="o",
                            label=name)
            ax.fill_between(xs, [p["accuracy"]["min"] for p in pts],
                            [p["accuracy"]["max"] for p in pts], color=line.get_color(),
                            alpha=0.15)
        if finite:
            ax.set_xscale("log", base=2)
            ax.set_xticks(finite, [f"{e:g}" for e in finite])
        ax.set(title=ds, xlabel="ε (accountant, at the run's δ)", ylabel="test accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(plt, fig, path, "Accuracy against ε (plain secure sum, distributed DP under "
                 "its own; band: min–max over seeds)")


def _plot_audit(rows: list[dict[str, Any]], path: Path) -> Path | None:
    plt = _pyplot()
    audited = [r for r in _reference(rows) if "one_run" in r and math.isfinite(r["epsilon"])]
    if not audited:
        return None
    datasets = sorted({r["dataset"] for r in audited})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.2), squeeze=False)
    for ax, ds in zip(axes[0], datasets, strict=True):
        mine = [r for r in audited if r["dataset"] == ds]
        top = max(r["accountant_epsilon_max"] for r in mine)
        ax.plot([0, top], [0, top], color="grey", lw=1, label="accountant ε (upper bound)")
        groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for r in mine:
            groups[r["label"] + (" (centralized)" if r["kind"] == "centralized" else "")].append(r)
        for name, pts in sorted(groups.items()):
            pts.sort(key=lambda r: r["epsilon"])
            xs = [p["accountant_epsilon_max"] for p in pts]
            line, = ax.plot(xs, [p["one_run"]["max"] for p in pts], marker="o",
                            label=f"{name}: one-run lower bound")
            if "estimate_all" in pts[0]:
                ax.plot(xs, [p["estimate_all"]["value"]["mean"] for p in pts], ls=":",
                        marker="x", color=line.get_color(),
                        label=f"{name}: canary estimate (all iterates)")
        ax.set(title=ds, xlabel="accountant ε", ylabel="empirical ε")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return _save(plt, fig, path, "Empirical audit against the accountant")


def _plot_costs(costs: list[dict[str, Any]], path: Path) -> Path | None:
    plt = _pyplot()
    if not costs:
        return None
    datasets = sorted({c["dataset"] for c in costs})
    fig, axes = plt.subplots(len(datasets), 1, figsize=(11, 3.8 * len(datasets)), squeeze=False)
    for ax, ds in zip(axes[:, 0], datasets, strict=True):
        mine = sorted((c for c in costs if c["dataset"] == ds),
                      key=lambda c: (c["mechanism"] != "none", c["mechanism"],
                                     c["secure"] != "plain", c["secure"]))
        names = [f"{c['mechanism']}\n{c['secure']}" for c in mine]
        xs = range(len(mine))
        train = [c["client_train_s"] for c in mine]
        protect = [c["client_protect_s"] for c in mine]
        server = [c["server_s"] for c in mine]
        ax.bar(xs, train, label="client: training (per client)")
        ax.bar(xs, protect, bottom=train, label="client: protection (per client)")
        ax.bar(xs, server, bottom=[a + b for a, b in zip(train, protect, strict=True)],
               label="server (per round)")
        ax.set_xticks(list(xs), names, fontsize=7)
        ax.set(ylabel="seconds per round", title=f"{ds} (d = {mine[0]['dim']:,})")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    return _save(plt, fig, path, None)


def write_tables(suite: Suite, directory: Path, records: list[dict[str, Any]]) -> list[Path]:
    """Write ``results.md``, ``summary.json`` and the plots; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    agg = aggregate(records)
    files = []
    lines = [f"# Suite `{suite.name}`", "", suite.description, "",
             f"{len(records)} of {len(suite.cells)} cells finished. Reproduce with "
             f"`privfl bench {suite.name}` (finished cells are not run again).", ""]
    if agg["accuracy"]:
        lines += _accuracy_md(agg["accuracy"]) + _audit_md(agg["accuracy"])
        lines += _agreement_md(agg["agreement"]) + _run_costs_md(agg["accuracy"])
    lines += _costs_md(agg["costs"])
    if records:
        lines += _stamps_md(records)
    md = directory / "results.md"
    md.write_text("\n".join(lines) + "\n")
    files.append(md)
    summary = directory / "summary.json"
    from privfl.bench.runner import to_jsonable

    summary.write_text(json.dumps(to_jsonable(agg), indent=1, sort_keys=True,
                                  allow_nan=False))
    files.append(summary)
    for fn, name in ((_plot_accuracy, "accuracy_vs_epsilon.png"),
                     (_plot_audit, "audit_vs_epsilon.png")):
        if agg["accuracy"]:
            p = fn(agg["accuracy"], directory / name)
            if p is not None:
                files.append(p)
    p = _plot_costs(agg["costs"], directory / "costs_per_round.png")
    if p is not None:
        files.append(p)
    return files
