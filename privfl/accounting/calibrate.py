"""Calibrate the noise multiplier σ to a target (ε, δ)."""

from __future__ import annotations

import math
from collections.abc import Callable

from privfl._validation import require_int, require_positive, require_probability
from privfl.accounting.accountant import (
    PLD_INTERVAL,
    Accountant,
    check_delta,
    dpsgd_epsilon_at,
)
from privfl.errors import ConfigurationError

__all__ = ["COARSE_PLD_INTERVAL", "calibrate_noise_multiplier", "calibrate_to"]

_SIGMA_MAX = 1e4
#: PLD discretisation used while searching (10× faster, a slightly larger upper bound).
COARSE_PLD_INTERVAL = 1e-3


def calibrate_to(epsilon_of: Callable[[float], float], target_epsilon: float, *,
                 rel_tol: float = 1e-3, sigma_max: float = _SIGMA_MAX,
                 upper_epsilon_of: Callable[[float], float] | None = None,
                 certify: Callable[[float], float] | None = None) -> float:
    """The smallest σ (to ``rel_tol``) with ``epsilon_of(σ) <= target_epsilon``.

    ε is non-increasing in σ for every mechanism privfl accounts; the search brackets by
    doubling/halving, then bisects. The returned σ is the upper end of the final bracket, so
    ``epsilon_of(σ) <= target_epsilon`` always holds.

    Args:
        epsilon_of: ε as a function of σ (the certifying accountant).
        target_epsilon: ε to meet.
        rel_tol: Relative precision of σ.
        sigma_max: Largest σ considered.
        upper_epsilon_of: A cheaper function with ``upper_epsilon_of(σ) >= epsilon_of(σ)``
            (RDP for PLD). Calibrating it first gives an upper bracket, so the expensive
            accountant is never evaluated at extreme σ.
        certify: The accountant that must certify the result, if ``epsilon_of`` is a faster
            approximation of it (coarse PLD for fine PLD); σ is raised by ``rel_tol`` steps
            until it certifies.

    Raises:
        ConfigurationError: The target cannot be met with σ ≤ ``sigma_max``.
    """
    require_positive("target_epsilon", target_epsilon)
    hi = 1.0
    if upper_epsilon_of is not None:
        hi = calibrate_to(upper_epsilon_of, target_epsilon, rel_tol=max(rel_tol, 1e-2),
                          sigma_max=sigma_max)
    while epsilon_of(hi) > target_epsilon:
        hi *= 2
        if hi > sigma_max:
            raise ConfigurationError(
                f"`target_epsilon`={target_epsilon} cannot be reached with noise_multiplier <= "
                f"{sigma_max:g}. Tip: raise the target, lower the sampling rate or the number "
                "of steps.")
    lo = hi / 2
    while lo > 1e-3 and epsilon_of(lo) <= target_epsilon:
        hi, lo = lo, lo / 2
    while (hi - lo) > rel_tol * hi:
        mid = (lo + hi) / 2
        if epsilon_of(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    if certify is not None:
        while certify(hi) > target_epsilon:
            hi *= 1 + rel_tol
            if hi > sigma_max:
                raise ConfigurationError(
                    f"`target_epsilon`={target_epsilon} cannot be certified.")
    return hi


def calibrate_noise_multiplier(*, target_epsilon: float, delta: float, sample_rate: float,
                               steps: int, accountant: Accountant = Accountant.PLD,
                               rel_tol: float = 1e-3) -> float:
    """The smallest σ such that DP-SGD with (q, σ, steps) is (target_epsilon, δ)-DP.

    Args:
        target_epsilon: ε > 0 to meet at the end.
        delta: δ ∈ (0, 1).
        sample_rate: Poisson rate q ∈ (0, 1].
        steps: Number of compositions ≥ 1.
        accountant: Accountant that must certify the target.
        rel_tol: Relative precision of σ.

    Raises:
        ConfigurationError: An argument is out of range or the target is unreachable.
    """
    require_positive("target_epsilon", target_epsilon)
    check_delta(delta)
    require_probability("sample_rate", sample_rate)
    require_int("steps", steps, minimum=1)
    if not math.isfinite(target_epsilon):
        raise ConfigurationError(f"`target_epsilon` must be finite. Found {target_epsilon}.")
    def eps(acc: Accountant, interval: float = PLD_INTERVAL) -> Callable[[float], float]:
        return lambda s: dpsgd_epsilon_at(sample_rate=sample_rate, noise_multiplier=s,
                                          steps=steps, delta=delta, accountant=acc,
                                          pld_interval=interval)

    if accountant is Accountant.PLD:
        return calibrate_to(eps(accountant, COARSE_PLD_INTERVAL), target_epsilon,
                            rel_tol=rel_tol, upper_epsilon_of=eps(Accountant.RDP),
                            certify=eps(accountant))
    return calibrate_to(eps(accountant), target_epsilon, rel_tol=rel_tol)
