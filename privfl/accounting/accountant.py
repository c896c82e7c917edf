"""ε from DP events with dp-accounting's PLD and RDP accountants.

privfl never reimplements the accounting maths: events are dp-accounting ``DpEvent`` objects
(``GaussianDpEvent``, ``PoissonSampledDpEvent``, ``SelfComposedDpEvent``, …) and ε comes from

* **PLD** — privacy loss distributions (Meiser & Mohammadi 2018; Sommer et al. 2019; Doroshenko
  et al. 2022), the tightest bound, pessimistic discretisation interval 1e-4 (default);
* **RDP** — Rényi DP (Mironov 2017; subsampled Gaussian of Mironov, Talwar & Zhang 2019) with
  the conversion of Balle et al. (2020), a looser but fast bound.

Both are upper bounds on the true ε. The neighbouring relation is explicit: add/remove one
(Poisson sampling) or replace one (sampling without replacement).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import math
from collections.abc import Iterator
from typing import Any

from privfl._validation import require_int, require_probability, require_real
from privfl.errors import ConfigurationError, UnsupportedEventError

__all__ = ["Accountant", "NeighboringRelation", "dpsgd_epsilon", "dpsgd_event", "epsilon"]


class Accountant(enum.Enum):
    """Which dp-accounting accountant turns events into ε."""

    PLD = "pld"
    RDP = "rdp"


class NeighboringRelation(enum.Enum):
    """Which pairs of data sets the guarantee is for."""

    ADD_OR_REMOVE_ONE = "add_or_remove_one"
    REPLACE_ONE = "replace_one"
    REPLACE_WITH_ZERO = "replace_with_zero"
    """One unit's data replaced by a neutral record (for client-level distributed DP: its update
    by zero while it still adds its noise share)."""


def _relation(rel: NeighboringRelation) -> Any:
    import dp_accounting

    rel_type = dp_accounting.NeighboringRelation
    return {NeighboringRelation.ADD_OR_REMOVE_ONE: rel_type.ADD_OR_REMOVE_ONE,
            NeighboringRelation.REPLACE_ONE: rel_type.REPLACE_ONE,
            NeighboringRelation.REPLACE_WITH_ZERO: rel_type.REPLACE_SPECIAL}[rel]


#: PLD discretisation used to certify ε (dp-accounting's default).
PLD_INTERVAL = 1e-4


@contextlib.contextmanager
def _quiet_absl() -> Iterator[None]:
    """dp-accounting logs a warning per skipped RDP order through absl; keep the CLI readable."""
    logger = logging.getLogger("absl")
    old = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(old)


def make_accountant(accountant: Accountant, relation: NeighboringRelation,
                    pld_interval: float = PLD_INTERVAL) -> Any:
    """A fresh dp-accounting accountant."""
    from dp_accounting import pld, rdp

    if accountant is Accountant.PLD:
        return pld.PLDAccountant(_relation(relation), value_discretization_interval=pld_interval)
    return rdp.RdpAccountant(neighboring_relation=_relation(relation))


def _sampled_gaussians(event: Any, count: int = 1) -> list[tuple[Any, int]] | None:
    """``event`` as (Poisson-sampled Gaussian, times) parts, or ``None`` for other shapes."""
    import dp_accounting as dpa

    if isinstance(event, dpa.NoOpDpEvent):
        return []
    if isinstance(event, dpa.SelfComposedDpEvent):
        return _sampled_gaussians(event.event, count * event.count)
    if isinstance(event, dpa.ComposedDpEvent):
        parts: list[tuple[Any, int]] = []
        for e in event.events:
            sub = _sampled_gaussians(e, count)
            if sub is None:
                return None
            parts += sub
        return parts
    if (isinstance(event, dpa.PoissonSampledDpEvent)
            and isinstance(event.event, dpa.GaussianDpEvent)
            and event.event.noise_multiplier > 0 and event.sampling_probability > 0):
        return [(event, count)]
    return None


@functools.lru_cache(maxsize=16)  # a PLD of a small σ holds MBs: keep the recent few
def _base_pld(noise_multiplier: float, sampling_prob: float, relation: NeighboringRelation,
              interval: float) -> Any:
    """PLD of one Poisson-sampled Gaussian: the expensive part, built once per parameters."""
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

    return pld_lib.from_gaussian_mechanism(
        standard_deviation=noise_multiplier, value_discretization_interval=interval,
        sampling_prob=sampling_prob, neighboring_relation=_relation(relation))


def _pld_epsilon(parts: list[tuple[Any, int]], delta: float, relation: NeighboringRelation,
                 interval: float) -> float:
    """What dp-accounting's PLDAccountant computes for these parts, in the same order.

    Each base PLD is cached: a ledger asks for the same mechanism composed r, r+1, … times.
    """
    from dp_accounting.pld import privacy_loss_distribution as pld_lib

    pld = pld_lib.identity(value_discretization_interval=interval)
    for ev, times in parts:
        base = _base_pld(ev.event.noise_multiplier, ev.sampling_probability, relation, interval)
        pld = pld.compose(base.self_compose(times))
    return float(pld.get_epsilon_for_delta(delta))


def check_delta(delta: float) -> float:
    """Validate δ ∈ (0, 1)."""
    return require_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)


def epsilon(event: Any, *, delta: float, accountant: Accountant = Accountant.PLD,
            relation: NeighboringRelation = NeighboringRelation.ADD_OR_REMOVE_ONE,
            pld_interval: float = PLD_INTERVAL) -> float:
    """ε(δ) of ``event`` under ``accountant``; never negative or NaN.

    ``pld_interval`` is the PLD's pessimistic discretisation: a coarser interval gives a larger
    (still valid) upper bound, faster — calibration searches with 1e-3 and certifies with 1e-4.

    Raises:
        UnsupportedEventError: The accountant cannot handle the event (for example PLD with
            sampling without replacement).
        ConfigurationError: δ outside (0, 1).
    """
    check_delta(delta)
    try:
        return _cached_epsilon(event, delta, accountant, relation, pld_interval)
    except TypeError:  # an unhashable event: compute it afresh
        return _epsilon(event, delta, accountant, relation, pld_interval)


@functools.lru_cache(maxsize=1024)
def _cached_epsilon(event: Any, delta: float, accountant: Accountant,
                    relation: NeighboringRelation, pld_interval: float) -> float:
    """Process-wide memo of :func:`epsilon`.

    Noise calibration asks the same questions in every run with the same target (a benchmark
    sweep over secure sums and seeds), and the answer depends on nothing else.
    """
    return _epsilon(event, delta, accountant, relation, pld_interval)


def _epsilon(event: Any, delta: float, accountant: Accountant, relation: NeighboringRelation,
             pld_interval: float) -> float:
    acc = make_accountant(accountant, relation, pld_interval)
    if not acc.supports(event):
        raise UnsupportedEventError(
            f"the {accountant.name} accountant cannot account for {type(event).__name__} under "
            f"{relation.name}. Tip: sampling without replacement needs the RDP accountant and "
            "the REPLACE_ONE relation.")
    parts = _sampled_gaussians(event) if accountant is Accountant.PLD else None
    try:
        with _quiet_absl():
            if parts:
                eps = _pld_epsilon(parts, delta, relation, pld_interval)
            else:
                acc.compose(event)
                eps = float(acc.get_epsilon(delta))
    except (ValueError, OverflowError, MemoryError, ArithmeticError) as exc:
        raise UnsupportedEventError(
            f"the {accountant.name} accountant failed on {event} at delta={delta:g}: "
            f"{type(exc).__name__}: {exc}. Tip: such extreme parameters are outside what it "
            "can discretise; try Accountant.RDP.") from exc
    if math.isnan(eps):
        raise UnsupportedEventError(f"the {accountant.name} accountant returned NaN for {event}.")
    return max(0.0, eps)


def dpsgd_event(*, sample_rate: float, noise_multiplier: float, steps: int) -> Any:
    """``steps`` compositions of the Poisson-subsampled Gaussian mechanism (q, σ)."""
    import dp_accounting

    require_probability("sample_rate", sample_rate)
    require_real("noise_multiplier", noise_multiplier, low=0.0)
    require_int("steps", steps, minimum=0)
    if noise_multiplier == 0 and steps > 0:
        return dp_accounting.NonPrivateDpEvent()
    inner: Any = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sample_rate < 1.0:
        inner = dp_accounting.PoissonSampledDpEvent(sample_rate, inner)
    return dp_accounting.SelfComposedDpEvent(inner, steps)


def dpsgd_epsilon(*, sample_rate: float, noise_multiplier: float, steps: int, delta: float,
                  accountant: Accountant = Accountant.PLD) -> float:
    """ε of DP-SGD: ``steps`` Poisson-subsampled Gaussians, add/remove-one neighbours.

    Args:
        sample_rate: Poisson sampling rate q ∈ (0, 1].
        noise_multiplier: σ ≥ 0 (noise std = σ × clip norm). σ = 0 gives ε = ∞.
        steps: Number of noisy steps ≥ 0.
        delta: Target δ ∈ (0, 1).
        accountant: PLD (tight, default) or RDP.

    Returns:
        ε ≥ 0 (``math.inf`` without noise).

    Raises:
        ConfigurationError: An argument is out of range.
    """
    return dpsgd_epsilon_at(sample_rate=sample_rate, noise_multiplier=noise_multiplier,
                            steps=steps, delta=delta, accountant=accountant)


def dpsgd_epsilon_at(*, sample_rate: float, noise_multiplier: float, steps: int, delta: float,
                     accountant: Accountant = Accountant.PLD,
                     pld_interval: float = PLD_INTERVAL) -> float:
    """:func:`dpsgd_epsilon` with an explicit PLD discretisation (used by calibration)."""
    check_delta(delta)
    if not isinstance(accountant, Accountant):
        raise ConfigurationError(f"`accountant` must be an Accountant. Found {accountant!r}.")
    event = dpsgd_event(sample_rate=sample_rate, noise_multiplier=noise_multiplier, steps=steps)
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    return epsilon(event, delta=delta, accountant=accountant, pld_interval=pld_interval)
