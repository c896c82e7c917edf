"""Audited runs: canaries planted like real records and clients, findings in the report, and an
audit that catches a mechanism which adds less noise than its ledger charges for."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privfl.accounting.report import FindingKind, PrivacyReport
from privfl.audit.canaries import CLIPPED_SCALE, CanaryClients, CanaryClientUpdate, CanaryExamples
from privfl.audit.plan import AuditPlan
from privfl.cli import main
from privfl.core.client import LocalSGD
from privfl.core.params import ParamSpec
from privfl.errors import ConfigurationError
from privfl.experiment import RunConfig, build_data, build_model, build_run, run_experiment

CLIENT_LEVEL = dict(dataset="synthetic", synthetic_iid=True, clients=100, sampling="poisson",
                    sample_rate=0.5, rounds=10, model="mlp", hidden=64, local_epochs=1,
                    audit=True, canaries=64, dp="central", epsilon=1.0,
                    secure_randomness=False)


def _values(findings: list[Any]) -> list[tuple[str, str, float]]:
    return [(f.method, f.threat_model, f.value) for f in findings]


def test_privfl_audit_writes_findings_beside_the_accountant(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    rc = main(["audit", "--dp", "local", "--epsilon", "4", "--rounds", "3", "--local-steps",
               "3", "--grad-sample-mode", "ghost", "--canaries", "32", "--out", str(tmp_path),
               "--name", "a", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "one-run audit" in out and "lower bound" in out and "accountant: 3.99" in out
    run = tmp_path / "a"
    report = PrivacyReport.load(run / "privacy_report.json")
    kinds = {a.method.split(" (")[0]: a.kind for a in report.audits}
    assert kinds == {"one-run audit": FindingKind.LOWER_BOUND,
                     "loss-threshold membership inference": FindingKind.HEURISTIC_BOUND}
    worst = report.worst_example()
    assert worst is not None
    for a in report.audits:
        assert a.unit_kind == "example" and a.delta == 1e-5
        assert a.accountant_epsilon == worst.epsilon
        assert a.value <= a.accountant_epsilon
    md = (run / "privacy_report.md").read_text()
    assert "## Empirical audit (beside the accountant's ε)" in md and "lower bound" in md
    raw = json.loads((run / "audit.json").read_text())
    assert len(raw["canary_scores"]) == len(raw["canary_included"]) == 32
    assert raw["member_losses"] and raw["non_member_losses"]
    # the report round-trips with its audits
    again = PrivacyReport.from_dict(json.loads(report.to_json()))
    assert again.audits == report.audits


def test_canary_clients_join_the_federation_and_are_sampled_like_real_clients() -> None:
    cfg = RunConfig.from_mapping({**CLIENT_LEVEL, "canaries": 40})
    plan = AuditPlan(cfg, build_data, build_model)
    assert plan.client_canaries is not None
    k = len(plan.client_canaries.inserted)
    assert 0 < k < 40 and plan.data.num_clients == 100 + k
    driver, dp = build_run(cfg, plan.data, plan.model, plan.wrap)
    assert driver.server.num_clients == 100 + k  # the accountant and the sampler see them
    counts = np.zeros(100 + k)
    for r in range(1, 201):
        counts[driver.server.sample(r)] += 1
    real, canary = counts[:100].mean() / 200, counts[100:].mean() / 200
    assert real == pytest.approx(0.5, abs=0.02) and canary == pytest.approx(0.5, abs=0.05)


def test_a_canary_client_sends_its_direction_past_the_clip() -> None:
    cc = CanaryClients(count=8, dim=50, seed=3)
    inner = LocalSGD(learning_rate=0.1)
    upd = CanaryClientUpdate(inner=inner, canaries=cc, first_id=10)
    j = int(cc.inserted[0])
    from privfl.data.dataset import ArrayDataset

    data = ArrayDataset.of(np.zeros((3, 4)), np.zeros(3))
    res = upd.train(None, None, np.zeros(50, np.float32), data, None, 10, 1)  # type: ignore
    assert np.allclose(res.delta / np.linalg.norm(res.delta), cc.direction(j), atol=1e-6)
    assert np.linalg.norm(res.delta) == pytest.approx(CLIPPED_SCALE, rel=1e-6)
    assert np.isnan(res.train_loss)
    with pytest.raises(ConfigurationError):  # example-level DP-SGD is audited with records
        from privfl.dp.local import DPSGDClientUpdate

        CanaryClientUpdate(inner=DPSGDClientUpdate(noise_multiplier=1.0, clip_norm=1.0,
                                                   sample_rate=0.1, steps=1, learning_rate=0.1),
                           canaries=cc, first_id=10)


def test_canary_records_are_planted_with_independent_coin_flips() -> None:
    cfg = RunConfig.from_mapping({"clients": 10, "audit": True, "canaries": 200})
    base = build_data(cfg)
    ce = CanaryExamples(count=200, seed=0)
    planted = ce.add_to(base)
    inc = ce.included
    assert 70 < inc.sum() < 130
    grown = [len(a) - len(b) for a, b in zip(planted.clients, base.clients, strict=True)]
    assert sum(grown) == inc.sum()
    owners = ce.owners(base.num_clients)
    assert np.array_equal(np.bincount(owners[inc], minlength=10), grown)
    rec = ce.records(base)
    lo = np.concatenate([c.x for c in base.clients]).min(0)
    hi = np.concatenate([c.x for c in base.clients]).max(0)
    assert (rec.x >= lo).all() and (rec.x <= hi).all()


@pytest.mark.parametrize(("extra", "message"), [
    ({"dp": "central", "epsilon": 2.0, "audit_unit": "example"}, "audit-unit client"),
    ({"dp": "local", "epsilon": 2.0, "audit_unit": "client"}, "audit-unit example"),
])
def test_an_audit_unit_the_guarantee_does_not_cover_is_refused(extra: dict[str, Any],
                                                               message: str) -> None:
    cfg = RunConfig.from_mapping({"dataset": "synthetic", "clients": 30, "audit": True,
                                  "sampling": "poisson", "sample_rate": 0.5, **extra})
    with pytest.raises(ConfigurationError, match=message):
        AuditPlan(cfg, build_data, build_model)


def test_same_seed_same_audit(tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping({"rounds": 3, "audit": True, "canaries": 32,
                                  "secure_randomness": False})
    a = run_experiment(cfg, run_dir=tmp_path / "a", plots=False)
    b = run_experiment(cfg, run_dir=tmp_path / "b", plots=False)
    assert _values(a.audit.findings) == _values(b.audit.findings)
    assert a.audit.canary_scores == b.audit.canary_scores


def test_the_audit_catches_a_mechanism_that_adds_less_noise_than_it_charges(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The attack an audit exists for: the ledger charges σ for ε = 1 while the stage adds
    1% of that noise. The accountant still says ε = 1; the one-run lower bound exceeds it.
    With the honest mechanism the same audit stays below ε."""
    import privfl.dp.central as central

    cfg = RunConfig.from_mapping(CLIENT_LEVEL)
    honest = run_experiment(cfg, run_dir=tmp_path / "honest", plots=False)
    for f in honest.audit.findings:
        if f.kind is not FindingKind.ESTIMATE:
            assert f.value <= f.accountant_epsilon, f

    original = central.CentralNoise._normal
    monkeypatch.setattr(central.CentralNoise, "_normal",
                        lambda self, size, std: original(self, size, std * 0.01))
    buggy = run_experiment(cfg, run_dir=tmp_path / "buggy", plots=False)
    bounds = [f for f in buggy.audit.findings if f.kind is FindingKind.LOWER_BOUND]
    assert {f.threat_model for f in bounds} == {"final model", "all iterates"}
    assert buggy.report.units[0].epsilon == pytest.approx(1.0, abs=1e-3)
    assert max(f.value for f in bounds) > 1.0
    assert all(f.accountant_epsilon == pytest.approx(1.0, abs=1e-3) for f in bounds)


def test_client_level_audit_scores_every_canary_and_every_round() -> None:
    cfg = RunConfig.from_mapping({**CLIENT_LEVEL, "rounds": 3, "canaries": 16})
    plan = AuditPlan(cfg, build_data, build_model)
    driver, dp = build_run(cfg, plan.data, plan.model, plan.wrap)
    plan.start(driver.params)
    hist = driver.run(on_round=lambda rec: plan.observe(driver.params))
    res = plan.finish(driver.params, dp.report(driver.secure_sum.trust_assumption(), hist))
    assert len(res.canary_scores) == len(res.all_iterates_scores) == 16
    spec = ParamSpec.from_module(plan.model)
    assert plan.client_canaries is not None and plan.client_canaries.dim == spec.dim
    methods = {(f.method.split(" (")[0], f.threat_model) for f in res.findings}
    assert methods == {("one-shot canary estimate", "final model"),
                       ("one-shot canary estimate", "all iterates"),
                       ("one-run audit", "final model"), ("one-run audit", "all iterates"),
                       ("loss-threshold membership inference", "final model")}
