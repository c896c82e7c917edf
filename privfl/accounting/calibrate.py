"""Calibrate the noise multiplier σ to a target (ε, δ)."""

from __future__ import annotations

import math
from collections.abc import Callable

from privfl._validation import require_int, require_positive, require_probability
from privfl.accounting.accountant import Accountant, check_delta, dpsgd_epsilon
from privfl.errors import ConfigurationError

__all__ = ["calibrate_noise_multiplier", "calibrate_to"]

_SIGMA_MAX = 1e4


def calibrate_to(epsilon_of: Callable[[float], float], target_epsilon: float, *,
                 rel_tol: float = 1e-3, sigma_max: float = _SIGMA_MAX) -> float:
    """The smallest σ (to ``rel_tol``) with ``epsilon_of(σ) <= target_epsilon``.

    ε is non-increasing in σ for every mechanism privfl accounts; the search brackets from
    σ = 1 by doubling/halving, then bisects. The returned σ is the upper end of the final
    bracket, so ``epsilon_of(σ) <= target_epsilon`` always holds.

    Raises:
        ConfigurationError: The target cannot be met with σ ≤ ``sigma_max``.
    """
    require_positive("target_epsilon", target_epsilon)
    hi = 1.0
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
    return calibrate_to(
        lambda s: dpsgd_epsilon(sample_rate=sample_rate, noise_multiplier=s, steps=steps,
                                delta=delta, accountant=accountant),
        target_epsilon, rel_tol=rel_tol)
