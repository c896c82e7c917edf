from __future__ import annotations

import dp_accounting
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.accounting import (
    Accountant,
    Budget,
    PrivacyLedger,
    PrivacyUnit,
    UnitKind,
    dpsgd_epsilon,
    dpsgd_event,
)
from privfl.errors import BudgetExceededError, UnsupportedEventError

Q, SIGMA, K = 0.05, 1.1, 20


def test_per_client_ledger_over_rounds_equals_one_shot() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    ev = dpsgd_event(sample_rate=Q, noise_multiplier=SIGMA, steps=K)
    for r in range(1, 31):
        ledger.record(PrivacyUnit.example(0), ev, round_id=r, mechanism="dp-sgd")
    one_shot = dpsgd_epsilon(sample_rate=Q, noise_multiplier=SIGMA, steps=30 * K, delta=1e-5)
    assert ledger.epsilon(PrivacyUnit.example(0)) == pytest.approx(one_shot, rel=1e-9)
    rdp = dpsgd_epsilon(sample_rate=Q, noise_multiplier=SIGMA, steps=30 * K, delta=1e-5,
                        accountant=Accountant.RDP)
    assert ledger.epsilon(PrivacyUnit.example(0), accountant=Accountant.RDP) == pytest.approx(rdp)


def test_client_that_skips_rounds_is_charged_only_its_own_steps() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    ev = dpsgd_event(sample_rate=Q, noise_multiplier=SIGMA, steps=K)
    for r in range(1, 21):
        ledger.record(PrivacyUnit.example(0), ev, round_id=r, mechanism="dp-sgd")
        if r % 4 == 0:
            ledger.record(PrivacyUnit.example(1), ev, round_id=r, mechanism="dp-sgd")
    eps1 = ledger.epsilon(PrivacyUnit.example(1))
    assert eps1 == pytest.approx(
        dpsgd_epsilon(sample_rate=Q, noise_multiplier=SIGMA, steps=5 * K, delta=1e-5))
    assert eps1 < ledger.epsilon(PrivacyUnit.example(0))
    assert ledger.epsilon(PrivacyUnit.example(2)) == 0.0
    assert ledger.rounds(PrivacyUnit.example(1)) == [4, 8, 12, 16, 20]
    # ε over rounds is monotone and bounded by the final value
    eps_by_round = [ledger.epsilon(PrivacyUnit.example(0), accountant=Accountant.RDP,
                                   up_to_round=r) for r in (5, 10, 20)]
    assert eps_by_round == sorted(eps_by_round)


def test_units_are_separate() -> None:
    ledger = PrivacyLedger(delta=1e-5)
    ev = dpsgd_event(sample_rate=Q, noise_multiplier=SIGMA, steps=K)
    for c in range(5):
        ledger.record(PrivacyUnit.example(c), ev, round_id=1, mechanism="dp-sgd")
    single = dpsgd_epsilon(sample_rate=Q, noise_multiplier=SIGMA, steps=K, delta=1e-5)
    for c in range(5):  # not 5× (never summed across clients)
        assert ledger.epsilon(PrivacyUnit.example(c)) == pytest.approx(single)
    assert ledger.epsilon(PrivacyUnit.client_level()) == 0.0


def test_budget_blocks_before_recording() -> None:
    ev = dpsgd_event(sample_rate=Q, noise_multiplier=SIGMA, steps=K)
    one = dpsgd_epsilon(sample_rate=Q, noise_multiplier=SIGMA, steps=K, delta=1e-5)
    ledger = PrivacyLedger(delta=1e-5, budgets={UnitKind.EXAMPLE: Budget(one * 1.05, 1e-5)})
    unit = PrivacyUnit.example(3)
    ledger.record(unit, ev, round_id=1, mechanism="dp-sgd")
    with pytest.raises(BudgetExceededError, match="example/client-3"):
        ledger.record(unit, ev, round_id=2, mechanism="dp-sgd")
    assert len(ledger.entries(unit)) == 1  # nothing recorded by the refused call


def test_pld_ledger_refuses_sampling_without_replacement() -> None:
    wor = dp_accounting.SampledWithoutReplacementDpEvent(50, 5, dp_accounting.GaussianDpEvent(1.0))
    from privfl.accounting import NeighboringRelation

    unit = PrivacyUnit.client_level(NeighboringRelation.REPLACE_ONE)
    with pytest.raises(UnsupportedEventError):
        PrivacyLedger(delta=1e-5).check(unit, wor)
    rdp = PrivacyLedger(delta=1e-5, accountant=Accountant.RDP)
    rdp.record(unit, wor, round_id=1, mechanism="dp-fedavg")
    assert rdp.epsilon(unit) > 0


def test_ledger_validation() -> None:
    with pytest.raises(Exception, match="delta"):
        PrivacyLedger(delta=0.0)
    with pytest.raises(Exception, match="same delta"):
        PrivacyLedger(delta=1e-5, budgets={UnitKind.CLIENT: Budget(1.0, 1e-6)})


@settings(max_examples=15, deadline=None)
@given(q=st.floats(0.01, 1.0), sigma=st.floats(0.5, 5.0), k=st.integers(1, 50),
       budget=st.floats(0.3, 10.0), acc=st.sampled_from(list(Accountant)))
def test_budget_guard_never_lets_reported_epsilon_exceed_the_budget(
        q: float, sigma: float, k: int, budget: float, acc: Accountant) -> None:
    ledger = PrivacyLedger(delta=1e-5, accountant=acc,
                           budgets={UnitKind.EXAMPLE: Budget(budget, 1e-5)})
    unit = PrivacyUnit.example(0)
    ev = dpsgd_event(sample_rate=q, noise_multiplier=sigma, steps=k)
    for r in range(1, 60):
        try:
            ledger.record(unit, ev, round_id=r, mechanism="dp-sgd")
        except BudgetExceededError:
            break
        assert ledger.epsilon(unit) <= budget
    assert ledger.epsilon(unit) <= budget


@settings(max_examples=10, deadline=None)
@given(sigma=st.floats(0.6, 3.0), budget=st.floats(0.5, 6.0), horizon=st.integers(1, 40),
       acc=st.sampled_from(list(Accountant)))
def test_horizon_is_a_hint_that_never_changes_which_rounds_run(
        sigma: float, budget: float, horizon: int, acc: Accountant) -> None:
    """A planned horizon certifies many rounds at once, but stops at exactly the same round."""
    ev = dpsgd_event(sample_rate=0.1, noise_multiplier=sigma, steps=5)
    stops = []
    for hint in (None, horizon):
        ledger = PrivacyLedger(delta=1e-5, accountant=acc, horizon=hint,
                               budgets={UnitKind.EXAMPLE: Budget(budget, 1e-5)})
        unit = PrivacyUnit.example(7)
        ran = 0
        for r in range(1, 45):
            try:
                ledger.record(unit, ev, round_id=r, mechanism="dp-sgd")
            except BudgetExceededError:
                break
            ran += 1
        assert ledger.epsilon(unit) <= budget
        stops.append(ran)
    assert stops[0] == stops[1]


def test_horizon_is_validated_and_carried_to_empty_like() -> None:
    with pytest.raises(Exception, match="horizon"):
        PrivacyLedger(delta=1e-5, horizon=0)
    assert PrivacyLedger(delta=1e-5, horizon=12).empty_like().horizon == 12
