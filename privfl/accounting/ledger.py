"""The privacy ledger: one composition of DP events per privacy unit, and budgets.

A *privacy unit* is what one guarantee protects (add/remove or replace one of *these*):

* ``UnitKind.EXAMPLE`` — one training example of one client. Local DP-SGD keeps one unit per
  client for the whole federation, charged only for the noisy steps that client really ran.
* ``UnitKind.CLIENT`` — one client's whole data set, across the population (client-level DP,
  DP-FedAvg): one unit for the federation, charged once per round that releases an aggregate.

Units are never combined: ε of different clients is **not** summed (each client's data is a
different data set; composition applies only to releases about the same data set).

Composition is commutative, so the ledger keeps, per unit, a multiset of identical events and
composes ``SelfComposedDpEvent(e, count)`` for each distinct e — one accountant call instead of
one convolution per round.

Budget checks (:meth:`PrivacyLedger.check`) run **before** a mechanism: if composing the next
event would push ε past the unit's budget, :class:`~privfl.errors.BudgetExceededError` is raised
and nothing is recorded. With the PLD accountant the check first asks RDP (fast); RDP upper-bounds
PLD for the subsampled Gaussian, so PLD is computed only when RDP alone cannot clear the step.
"""

from __future__ import annotations

import enum
import functools
import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from privfl._validation import require_int, require_positive
from privfl.accounting.accountant import (
    PLD_INTERVAL,
    Accountant,
    NeighboringRelation,
    check_delta,
    epsilon,
    make_accountant,
)
from privfl.errors import BudgetExceededError, ConfigurationError, UnsupportedEventError

__all__ = ["Budget", "LedgerEntry", "PrivacyLedger", "PrivacyUnit", "UnitKind"]


class UnitKind(enum.Enum):
    """The granularity of a privacy guarantee."""

    EXAMPLE = "example"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class PrivacyUnit:
    """One privacy unit: its kind, the client (for example-level units) and the relation."""

    kind: UnitKind
    client: int | None = None
    relation: NeighboringRelation = NeighboringRelation.ADD_OR_REMOVE_ONE

    def __post_init__(self) -> None:
        if (self.kind is UnitKind.EXAMPLE) != (self.client is not None):
            raise ConfigurationError("an EXAMPLE unit needs `client`; a CLIENT unit must not "
                                     f"have one. Found kind={self.kind}, client={self.client}.")

    @classmethod
    def example(cls, client: int) -> PrivacyUnit:
        """Example-level DP inside ``client`` (add/remove one example)."""
        require_int("client", client, minimum=0)
        return cls(UnitKind.EXAMPLE, client)

    @classmethod
    def client_level(cls, relation: NeighboringRelation = NeighboringRelation.ADD_OR_REMOVE_ONE
                     ) -> PrivacyUnit:
        """Client-level DP across the population."""
        return cls(UnitKind.CLIENT, None, relation)

    @property
    def key(self) -> str:
        """A stable name, e.g. ``example/client-3`` or ``client``."""
        return "client" if self.client is None else f"example/client-{self.client}"


@dataclass(frozen=True, slots=True)
class Budget:
    """A privacy budget (ε, δ): ε > 0 finite, δ ∈ (0, 1)."""

    epsilon: float
    delta: float

    def __post_init__(self) -> None:
        require_positive("epsilon", self.epsilon)
        check_delta(self.delta)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One recorded mechanism run."""

    round_id: int
    mechanism: str
    event: Any
    params: Mapping[str, Any]


@dataclass
class _UnitBook:
    entries: list[LedgerEntry] = field(default_factory=list)
    counts: Counter[Any] = field(default_factory=Counter)


def _compose(counts: Mapping[Any, int]) -> Any:
    import dp_accounting

    parts = [dp_accounting.SelfComposedDpEvent(e, n) if n > 1 else e
             for e, n in sorted(counts.items(), key=lambda kv: repr(kv[0]))]
    if not parts:
        return dp_accounting.NoOpDpEvent()
    return parts[0] if len(parts) == 1 else dp_accounting.ComposedDpEvent(parts)


@functools.lru_cache(maxsize=4096)
def _composed_epsilon(counts: frozenset[tuple[Any, int]], delta: float,
                      relation: NeighboringRelation, accountant: Accountant,
                      pld_interval: float) -> float:
    """ε of a composition, shared by every ledger of the process.

    The clients of a simulated federation hold identical histories; each would otherwise pay
    the accountant alone.
    """
    import dp_accounting

    if any(isinstance(e, dp_accounting.NonPrivateDpEvent) for e, _ in counts):
        return math.inf
    return epsilon(_compose(dict(counts)), delta=delta, accountant=accountant,
                   relation=relation, pld_interval=pld_interval)


_CERTIFIED: dict[tuple[Any, ...], list[dict[Any, int]]] = {}
_MAX_CERTIFICATES = 64


def _certified(key: tuple[Any, ...], counts: Mapping[Any, int]) -> bool:
    """Whether ``counts`` is dominated by a composition already shown to be within budget.

    ε never decreases when a mechanism is composed once more, so every composition that runs
    each mechanism at most as often as a certified one is within the same budget.
    """
    return any(all(n <= cert.get(e, 0) for e, n in counts.items())
               for cert in _CERTIFIED.get(key, ()))


def _certify(key: tuple[Any, ...], counts: Mapping[Any, int]) -> None:
    certs = _CERTIFIED.setdefault(key, [])
    certs.append(dict(counts))
    del certs[:-_MAX_CERTIFICATES]


class PrivacyLedger:
    """Records the DP events of every mechanism, per privacy unit, and enforces budgets.

    Args:
        delta: δ at which ε is reported (and the δ of the budgets).
        accountant: The accountant that certifies ε (PLD by default; RDP is reported alongside).
        budgets: Optional budget per unit kind, checked before each mechanism runs.
        horizon: How many times a unit's per-round event is planned to run (the rounds), a
            performance hint only: the first budget check certifies the whole plan at once
            (one accountant call instead of one per round), and a plan that does not fit falls
            back to the exact check of the next event. It never changes which checks pass.
    """

    def __init__(self, *, delta: float, accountant: Accountant = Accountant.PLD,
                 budgets: Mapping[UnitKind, Budget] | None = None,
                 horizon: int | None = None) -> None:
        self.delta = check_delta(delta)
        if not isinstance(accountant, Accountant):
            raise ConfigurationError(f"`accountant` must be an Accountant. Found {accountant!r}.")
        self.accountant = accountant
        self.budgets = dict(budgets or {})
        for kind, b in self.budgets.items():
            if b.delta != self.delta:
                raise ConfigurationError(
                    f"budget for {kind.value} units has delta={b.delta}, but the ledger reports "
                    f"at delta={self.delta}. Tip: use the same delta.")
        self.horizon = None if horizon is None else require_int("horizon", horizon, minimum=1)
        self._books: dict[PrivacyUnit, _UnitBook] = {}

    def empty_like(self) -> PrivacyLedger:
        """A new, empty ledger with the same δ, accountant, budgets and horizon."""
        return PrivacyLedger(delta=self.delta, accountant=self.accountant, budgets=self.budgets,
                             horizon=self.horizon)

    # --- accounting ---------------------------------------------------------------------
    def _eps(self, counts: Mapping[Any, int], relation: NeighboringRelation,
             accountant: Accountant, pld_interval: float = PLD_INTERVAL) -> float:
        if not counts:
            return 0.0
        return _composed_epsilon(frozenset(counts.items()), self.delta, relation, accountant,
                                 pld_interval)

    def supports(self, unit: PrivacyUnit, event: Any,
                 accountant: Accountant | None = None) -> bool:
        """Whether ``accountant`` (default: the ledger's) can account ``event`` for ``unit``."""
        acc = make_accountant(accountant or self.accountant, unit.relation)
        return bool(acc.supports(event))

    def require_supported(self, unit: PrivacyUnit, event: Any) -> None:
        """Raise :class:`UnsupportedEventError` now if the ledger's accountant cannot handle it."""
        if not self.supports(unit, event):
            raise UnsupportedEventError(
                f"the {self.accountant.name} accountant cannot account for {event} under "
                f"{unit.relation.name}. Tip: fixed-size client sampling needs "
                "Accountant.RDP; Poisson sampling works with both.")

    def epsilon(self, unit: PrivacyUnit, *, accountant: Accountant | None = None,
                up_to_round: int | None = None, pld_interval: float = PLD_INTERVAL) -> float:
        """ε(δ) of ``unit`` over all recorded events (or those of rounds ≤ ``up_to_round``).

        ``pld_interval`` coarser than the default gives a faster, slightly larger upper bound.
        """
        book = self._books.get(unit)
        if book is None:
            return 0.0
        counts: Counter[Any] = Counter()
        if up_to_round is None:
            counts = book.counts
        else:
            for e in book.entries:
                if e.round_id <= up_to_round:
                    counts[e.event] += 1
        return self._eps(counts, unit.relation, accountant or self.accountant, pld_interval)

    def projected_epsilon(self, unit: PrivacyUnit, event: Any, times: int = 1,
                          accountant: Accountant | None = None) -> float:
        """ε(δ) of ``unit`` if ``event`` were composed ``times`` more times."""
        book = self._books.get(unit, _UnitBook())
        counts = Counter(book.counts)
        counts[event] += times
        return self._eps(counts, unit.relation, accountant or self.accountant)

    # --- budgets and recording ------------------------------------------------------------
    def check(self, unit: PrivacyUnit, event: Any) -> None:
        """Raise :class:`BudgetExceededError` if recording ``event`` would exceed the budget.

        Never mutates the ledger.
        """
        self.require_supported(unit, event)
        budget = self.budgets.get(unit.kind)
        if budget is None:
            return
        book = self._books.get(unit, _UnitBook())
        counts = Counter(book.counts)
        counts[event] += 1
        key = (self.delta, unit.relation, self.accountant, budget.epsilon)
        if _certified(key, counts):
            return
        if self.horizon is not None and counts[event] < self.horizon:
            plan = Counter(counts)
            plan[event] = self.horizon
            if self._within(unit, event, plan, budget.epsilon) is None:
                _certify(key, plan)
                return
        eps = self._within(unit, event, counts, budget.epsilon)
        if eps is not None:
            raise BudgetExceededError(
                f"{unit.key}: the next mechanism would bring epsilon to {eps:.4g} > budget "
                f"{budget.epsilon:g} (delta={budget.delta:g}, {self.accountant.name}). "
                "It was not run.")
        _certify(key, counts)

    def _within(self, unit: PrivacyUnit, event: Any, counts: Mapping[Any, int],
                budget: float) -> float | None:
        """``None`` if ``counts`` is within ``budget``, else its ε.

        RDP is tried first when PLD certifies: it is faster and looser, so RDP within the
        budget settles it.
        """
        if (self.accountant is Accountant.PLD and self.supports(unit, event, Accountant.RDP)
                and self._eps(counts, unit.relation, Accountant.RDP) <= budget):
            return None
        eps = self._eps(counts, unit.relation, self.accountant)
        return None if eps <= budget else eps

    def record(self, unit: PrivacyUnit, event: Any, *, round_id: int, mechanism: str,
               params: Mapping[str, Any] | None = None, already_released: bool = False) -> None:
        """Check the budget, then record that ``mechanism`` released ``event`` about ``unit``.

        ``already_released=True`` records a release that has happened whatever the budget
        says (for example fewer noise shares than planned reached the server): the ledger must
        show it; the next :meth:`check` then stops further rounds.
        """
        require_int("round_id", round_id, minimum=0)
        if already_released:
            self.require_supported(unit, event)
        else:
            self.check(unit, event)
        book = self._books.setdefault(unit, _UnitBook())
        book.entries.append(LedgerEntry(round_id, mechanism, event, dict(params or {})))
        book.counts[event] += 1

    # --- inspection -------------------------------------------------------------------------
    @property
    def units(self) -> list[PrivacyUnit]:
        """Units with at least one recorded event, clients first then by id."""
        return sorted(self._books, key=lambda u: (u.kind.value, u.client or 0))

    def entries(self, unit: PrivacyUnit) -> list[LedgerEntry]:
        """The recorded events of ``unit``, in order."""
        book = self._books.get(unit)
        return list(book.entries) if book else []

    def rounds(self, unit: PrivacyUnit) -> list[int]:
        """Distinct rounds in which ``unit`` was charged."""
        return sorted({e.round_id for e in self.entries(unit)})

    # --- checkpoints --------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Every unit's entries as a state tree (see :mod:`privfl.core.checkpoint`).

        The settings (δ, accountant, budgets) are not part of the state: they come from the
        run's configuration, and :meth:`load_state_dict` restores entries into a ledger built
        from it.
        """
        from privfl.accounting.events import event_to_json

        return {"delta": self.delta, "accountant": self.accountant.value, "units": [
            {"kind": u.kind.value, "client": u.client, "relation": u.relation.value,
             "entries": [{"round_id": e.round_id, "mechanism": e.mechanism,
                          "event": event_to_json(e.event), "params": dict(e.params)}
                         for e in self._books[u].entries]}
            for u in self.units]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Replace the recorded entries with ``state``'s.

        Budgets are not re-checked: these releases happened.

        Raises:
            CheckpointError: A malformed state, or one recorded at another δ or accountant
                (a checkpoint of a different configuration).
        """
        from privfl.accounting.events import event_from_json
        from privfl.core.checkpoint import require
        from privfl.errors import CheckpointError

        if require(state, "delta", float) != self.delta or \
                require(state, "accountant", str) != self.accountant.value:
            raise CheckpointError(
                f"the checkpointed ledger was kept at delta={state.get('delta')} with "
                f"{state.get('accountant')}; this run's ledger uses delta={self.delta} with "
                f"{self.accountant.value}")
        books: dict[PrivacyUnit, _UnitBook] = {}
        try:
            for u in require(state, "units", list):
                unit = PrivacyUnit(UnitKind(u["kind"]), u["client"],
                                   NeighboringRelation(u["relation"]))
                book = books.setdefault(unit, _UnitBook())
                for e in u["entries"]:
                    event = event_from_json(e["event"])
                    entry = LedgerEntry(require_int("round_id", e["round_id"], minimum=0),
                                        str(e["mechanism"]), event, dict(e["params"]))
                    book.entries.append(entry)
                    book.counts[event] += 1
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"malformed ledger state: {exc!r}") from exc
        self._books = books
