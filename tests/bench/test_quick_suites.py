"""The quick suites, run as a researcher would, and the sanity of what they report.

* DP accuracy is at most the non-private accuracy plus seed noise;
* the CKKS and pairwise secure sums agree with the plain sum up to encoding noise;
* every empirical lower bound is at most the accountant's ε — and when one is not, the failure
  says whether the audit or the accountant is to blame (the audit is re-run on a simulated
  mechanism that is exactly ε-DP: if it "proves" more than ε there, the audit is wrong);
* the canary statistic and the membership AUC at ε = ∞ are clearly above their values at ε = 1;
* the same seed gives the same numbers (a cell re-run in this process equals its result from a
  worker process);
* the costs suite measures every layer against the unprotected run.
"""

from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from scipy.special import expit

from privfl.audit.membership import loss_threshold_attack
from privfl.audit.one_run import one_run_audit
from privfl.bench.cells import run_cell
from privfl.bench.runner import load_cells, run_suite
from privfl.bench.suite import load_suite

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]

SEED_NOISE = 0.05


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, list[dict[str, Any]]]:
    out = tmp_path_factory.mktemp("bench")
    suite = load_suite("privacy-accuracy", quick=True)
    suite = dataclasses.replace(suite, name="privacy-accuracy-quick")
    run = run_suite(suite, out, jobs=2, progress=False)
    assert not run.failed, run.failed
    return suite, load_cells(run.directory, suite.cells)


def _by(records: list[dict[str, Any]], **labels: Any) -> list[dict[str, Any]]:
    return [r for r in records if all(r["labels"][k] == v for k, v in labels.items())]


def test_every_cell_of_the_quick_suite_finished(results: Any) -> None:
    suite, records = results
    assert len(records) == len(suite.cells)
    assert {r["labels"]["dataset"] for r in records} == {"digits", "synthetic-examples",
                                                          "synthetic-clients"}


def test_dp_accuracy_is_at_most_the_non_private_accuracy(results: Any) -> None:
    _, records = results
    for ds in ("digits", "synthetic-examples", "synthetic-clients"):
        for kind in ("federated", "centralized"):
            mine = [r for r in records if r["labels"]["dataset"] == ds and r["kind"] == kind]
            if not mine:
                continue
            best = max(r["result"]["accuracy"] for r in mine
                       if math.isinf(r["labels"]["epsilon"]))
            for r in mine:
                if math.isfinite(r["labels"]["epsilon"]):
                    assert r["result"]["accuracy"] <= best + SEED_NOISE, (ds, r["labels"])


def test_the_secure_sums_agree_up_to_encoding_noise(results: Any) -> None:
    _, records = results
    groups: dict[tuple[Any, ...], dict[str, dict[str, Any]]] = defaultdict(dict)
    for r in records:
        if r["kind"] == "federated":
            lab = r["labels"]
            groups[(lab["dataset"], lab["mechanism"], lab["epsilon"], lab["seed"])][
                lab["secure"]] = r["result"]
    compared = 0
    for key, sums in groups.items():
        if "plain" not in sums:
            continue
        plain = sums["plain"]
        for name, res in sums.items():
            if name == "plain":
                continue
            compared += 1
            assert abs(res["accuracy"] - plain["accuracy"]) <= 0.005, (key, name)
            rel = abs(res["final_params_l2"] - plain["final_params_l2"]) / plain["final_params_l2"]
            assert rel <= 1e-4, (key, name, rel)
    assert compared >= 8  # ckks and a pairwise sum for every mechanism and data set


def _audit_is_wrong(finding: dict[str, Any]) -> bool:
    """Re-run the finding's statistic on a mechanism that is exactly ε-DP (ε-randomised
    response, the extreme case for pure DP): does it claim more than ε there too?"""
    eps = finding["accountant_epsilon"]
    rng = np.random.default_rng(0)
    exceed = 0
    trials = 100
    for _ in range(trials):
        if finding["method"].startswith("one-run"):
            m = int(finding["details"]["canaries"])
            inc = rng.random(m) < 0.5
            truthful = rng.random(m) < expit(eps)
            scores = np.where(truthful == inc, 1.0, 0.0) + rng.random(m) * 1e-6
            value = one_run_audit(scores, inc, delta=finding["delta"]).epsilon_lower
        else:
            n1, n0 = int(finding["details"]["members"]), int(finding["details"]["non_members"])
            q = expit(eps)
            mem = np.where(rng.random(n1) < q, 0.0, 1.0) + rng.random(n1) * 1e-6
            non = np.where(rng.random(n0) < 1 - q, 0.0, 1.0) + rng.random(n0) * 1e-6
            value = loss_threshold_attack(mem, non, delta=finding["delta"]).epsilon_lower
        exceed += value > eps
    return exceed / trials > 0.05


def test_no_empirical_lower_bound_exceeds_the_accountant(results: Any) -> None:
    _, records = results
    checked = 0
    for r in records:
        for f in r["result"]["findings"]:
            if f["kind"] == "estimate":
                continue  # a point estimate (Andrew et al.) may exceed ε; it is labelled so
            checked += 1
            if f["value"] > f["accountant_epsilon"]:
                culprit = ("the AUDIT is wrong: on a mechanism that is exactly ε-DP it also "
                           "claims more than ε" if _audit_is_wrong(f) else
                           "the ACCOUNTANT (or the mechanism's implementation) is wrong: the "
                           "audit is sound on an exactly ε-DP mechanism, yet here it shows "
                           "more leakage than the ledger charged for")
                pytest.fail(f"{r['labels']}: {f['method']} ({f['threat_model']}) gives "
                            f"{f['value']:.4g} > accountant ε {f['accountant_epsilon']:.4g}; "
                            f"{culprit}")
    assert checked >= 30


def _finding(r: dict[str, Any], prefix: str, threat: str) -> dict[str, Any]:
    return next(f for f in r["result"]["findings"]
                if f["method"].startswith(prefix) and f["threat_model"] == threat)


def test_canary_statistic_and_membership_auc_separate_no_privacy_from_eps_1(
        results: Any) -> None:
    _, records = results

    def one(**labels: Any) -> dict[str, Any]:
        (r,) = [r for r in _by(records, secure="plain", seed=0, **labels)
                if r["kind"] == "federated"]
        return r

    # client level: the inserted canaries' mean z-score (all iterates, the accountant's view)
    inf = one(dataset="synthetic-clients", mechanism="none-clients")
    eps1 = one(dataset="synthetic-clients", mechanism="central", epsilon=1.0)
    z_inf = _finding(inf, "one-shot", "all iterates")["details"]["mean_z"]
    z_1 = _finding(eps1, "one-shot", "all iterates")["details"]["mean_z"]
    assert z_inf > z_1 + 0.5, (z_inf, z_1)
    # example level: how well the canary records' losses separate planted from unplanted
    for ds in ("digits", "synthetic-examples"):
        a_inf = _finding(one(dataset=ds, mechanism="none"), "one-run", "final model")
        a_1 = _finding(one(dataset=ds, mechanism="local", epsilon=1.0), "one-run",
                       "final model")
        assert a_inf["details"]["canary_auc"] > a_1["details"]["canary_auc"] + 0.05, ds
    # membership inference on real records of a model that can overfit
    m_inf = _finding(one(dataset="synthetic-examples", mechanism="none"), "loss-threshold",
                     "final model")["details"]["auc"]
    m_1 = _finding(one(dataset="synthetic-examples", mechanism="local", epsilon=1.0),
                   "loss-threshold", "final model")["details"]["auc"]
    assert m_inf > m_1 + 0.05, (m_inf, m_1)


def test_the_same_seed_gives_the_same_numbers(results: Any) -> None:
    suite, records = results
    for mech in ("local", "central"):
        cell = next(c for c in suite.cells
                    if c.labels["mechanism"] == mech and c.labels["secure"] != "plain")
        (rec,) = [r for r in records if r["cell_id"] == cell.cell_id]
        again = run_cell(cell.kind.value, cell.config)  # in this process, not a worker
        for key in ("accuracy", "accountant_epsilon", "final_params_sha256",
                    "accuracy_by_round", "raw"):
            assert again[key] == rec["result"][key], (mech, key)
        assert [f["value"] for f in again["findings"]] == [
            f["value"] for f in rec["result"]["findings"]]


def test_costs_suite_measures_every_layer_against_the_unprotected_run(
        tmp_path: Path) -> None:
    suite = dataclasses.replace(load_suite("costs", quick=True), name="costs-quick")
    run = run_suite(suite, tmp_path, progress=False)
    assert not run.failed, run.failed
    records = load_cells(run.directory, suite.cells)
    assert len(records) == len(suite.cells)
    res = {(r["labels"]["mechanism"], r["labels"]["secure"]): r["result"] for r in records}
    base = res[("none", "plain")]
    d = base["dim"]
    assert base["bytes_up_per_client"] >= 4 * d  # float32 update and its envelope
    for (mech, secure), r in res.items():
        assert r["wall_s"] > 0 and r["server_s"] > 0 and r["client_train_s"] > 0
        assert r["client_protect_s"] >= 0 and r["server_peak_bytes"] > 0
        assert r["bytes_down_per_client"] >= 4 * d  # the model broadcast
        if secure != "plain":
            assert r["bytes_up_per_client"] > base["bytes_up_per_client"], (mech, secure)
    md = (run.directory / "results.md").read_text()
    assert "## Cost per round per layer" in md
    assert (run.directory / "costs_per_round.png").stat().st_size > 0
