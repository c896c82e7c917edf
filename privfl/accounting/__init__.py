"""Privacy accounting: DP events, ε with PLD and RDP, calibration, ledgers, budgets, reports."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

if TYPE_CHECKING:
    from privfl.accounting.accountant import (
        Accountant,
        NeighboringRelation,
        dpsgd_epsilon,
        dpsgd_event,
        epsilon,
    )
    from privfl.accounting.calibrate import calibrate_noise_multiplier, calibrate_to
    from privfl.accounting.ledger import Budget, LedgerEntry, PrivacyLedger, PrivacyUnit, UnitKind
    from privfl.accounting.report import PrivacyReport, Scope, UnitReport

__all__ = [
    "Accountant",
    "Budget",
    "LedgerEntry",
    "NeighboringRelation",
    "PrivacyLedger",
    "PrivacyReport",
    "PrivacyUnit",
    "Scope",
    "UnitKind",
    "UnitReport",
    "calibrate_noise_multiplier",
    "calibrate_to",
    "dpsgd_epsilon",
    "dpsgd_event",
    "epsilon",
]

_EXPORTS = {
    "Accountant": "privfl.accounting.accountant",
    "NeighboringRelation": "privfl.accounting.accountant",
    "dpsgd_epsilon": "privfl.accounting.accountant",
    "dpsgd_event": "privfl.accounting.accountant",
    "epsilon": "privfl.accounting.accountant",
    "calibrate_noise_multiplier": "privfl.accounting.calibrate",
    "calibrate_to": "privfl.accounting.calibrate",
    "Budget": "privfl.accounting.ledger",
    "LedgerEntry": "privfl.accounting.ledger",
    "PrivacyLedger": "privfl.accounting.ledger",
    "PrivacyUnit": "privfl.accounting.ledger",
    "UnitKind": "privfl.accounting.ledger",
    "PrivacyReport": "privfl.accounting.report",
    "Scope": "privfl.accounting.report",
    "UnitReport": "privfl.accounting.report",
}

__getattr__ = lazy_getattr("privfl.accounting", _EXPORTS)
