from __future__ import annotations

import math
from pathlib import Path

import pytest

from privfl.accounting import (
    Budget,
    PrivacyLedger,
    PrivacyReport,
    PrivacyUnit,
    UnitKind,
    dpsgd_event,
)
from privfl.core.securesum import PlainSecureSum
from privfl.recipes import _trust_dict


def _ledger() -> PrivacyLedger:
    ledger = PrivacyLedger(delta=1e-5, budgets={UnitKind.EXAMPLE: Budget(20.0, 1e-5)})
    ev = dpsgd_event(sample_rate=0.1, noise_multiplier=1.0, steps=10)
    for r in range(1, 6):
        for c in range(3):
            if c != 2 or r % 2:
                ledger.record(PrivacyUnit.example(c), ev, round_id=r, mechanism="DP-SGD",
                              params={"noise_multiplier": 1.0, "clip_norm": 1.0})
    return ledger


def test_report_contents_roundtrip_markdown_and_plot(tmp_path: Path) -> None:
    report = PrivacyReport.from_ledger(
        _ledger(), trust_assumptions=[_trust_dict(PlainSecureSum().trust_assumption())])
    assert [u.unit for u in report.units] == [f"example/client-{c}" for c in range(3)]
    u0, u2 = report.units[0], report.units[2]
    assert u0.rounds_charged == 5 and u2.rounds_charged == 3
    assert u2.epsilon is not None and u0.epsilon is not None and u2.epsilon < u0.epsilon
    assert u0.epsilon_pld is not None and u0.epsilon_rdp is not None
    assert u0.epsilon_pld <= u0.epsilon_rdp
    assert u0.neighboring_relation == "add_or_remove_one" and u0.accountant == "PLD"
    assert u0.mechanisms[0]["times"] == 5 and "PoissonSampled" in u0.mechanisms[0]["dp_event"]
    eps_rdp = [row[1] for row in u0.epsilon_by_round]
    assert eps_rdp == sorted(eps_rdp) and len(eps_rdp) == 5
    again = PrivacyReport.from_dict(report.to_dict())
    assert again == report
    md = report.to_markdown()
    for needle in ("PLD", "add or remove one", "never summed", "The server sees every client's",
                   "| 2 |"):
        assert needle in md
    png = report.plot(tmp_path / "eps.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_client_level_report_and_infinite_epsilon() -> None:
    import dp_accounting

    ledger = PrivacyLedger(delta=1e-5)
    ledger.record(PrivacyUnit.client_level(), dp_accounting.NonPrivateDpEvent(), round_id=1,
                  mechanism="no noise")
    report = PrivacyReport.from_ledger(ledger)
    assert report.units[0].epsilon == math.inf
    assert PrivacyReport.from_dict(report.to_dict()).units[0].epsilon == math.inf
    assert "∞" in report.to_markdown()


def test_empty_report_says_no_dp() -> None:
    report = PrivacyReport(delta=math.nan, accountant="none", units=[])
    assert "No differential privacy" in report.to_markdown()
    with pytest.raises(KeyError):
        PrivacyReport.from_dict({"units": []})
