"""Auditing with one training run (Steinke, Nasr, Jagielski, NeurIPS 2023, arXiv 2305.08846).

m canaries, each included independently with probability ½ (Sᵢ ∈ {−1, +1}), one training run;
an auditor who sees only the output guesses Tᵢ = +1 for its k₊ highest-scoring canaries,
Tᵢ = −1 for its k₋ lowest and abstains on the rest. With r = k₊ + k₋ guesses of which v are
right, an (ε, δ)-DP mechanism — DP with respect to each canary's inclusion — satisfies
(the paper's Theorem with its improved δ term, Appendix D)

    P[W ≥ v] ≤ p(ε, δ) = min{1, P[Bin(r, q) ≥ v] + 2mδ · max_{1≤i≤v} P[v−i ≤ Bin(r, q) < v] / i},

q = e^ε / (1 + e^ε). The lower bound at confidence 1 − β is the largest ε that this p-value
still rejects: ε_lo = sup{ε ≥ 0 : p(ε, δ) < β} (0 when even ε = 0 is not rejected).

Choosing k₊, k₋ after seeing the scores is multiple testing: :func:`one_run_audit` tests a
small grid fixed in advance and divides β by its size (Bonferroni), so the reported bound holds
at the stated confidence whichever guess set wins.

Threat model: the bound is about the whole sampled mechanism that decided each canary's fate —
client or example sampling included — and about the adversary whose view the scores come from
(the final model here, a weaker adversary than the accountant's, who sees every round).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize, special, stats

from privfl._validation import require_int, require_real
from privfl.errors import ConfigurationError

__all__ = [
    "OneRunBound",
    "guess_grid",
    "one_run_audit",
    "one_run_lower_bound",
    "one_run_p_value",
]


def one_run_p_value(eps: float, *, guesses: int, correct: int, canaries: int,
                    delta: float) -> float:
    """p(ε, δ): the probability bound on ≥ ``correct`` of ``guesses`` under (ε, δ)-DP."""
    r, v = guesses, correct
    if v == 0:
        return 1.0
    q = float(special.expit(eps))
    tail = float(stats.binom.sf(v - 1, r, q))  # P[Bin ≥ v]
    if delta == 0:
        return min(1.0, tail)
    i = np.arange(1, v + 1)
    window = stats.binom.sf(v - i - 1, r, q) - tail  # P[v−i ≤ Bin < v]
    return min(1.0, tail + 2 * canaries * delta * float(np.max(window / i)))


def one_run_lower_bound(*, guesses: int, correct: int, canaries: int, delta: float,
                        beta: float) -> float:
    """ε_lo = sup{ε ≥ 0 : p(ε, δ) < β}; 0 if ε = 0 is not rejected.

    Raises:
        ConfigurationError: Counts out of range, δ ∉ [0, 1) or β ∉ (0, 1).
    """
    require_int("canaries", canaries, minimum=1)
    require_int("guesses", guesses, minimum=0, maximum=canaries)
    require_int("correct", correct, minimum=0, maximum=guesses)
    require_real("delta", delta, low=0.0, high=1.0, high_open=True)
    require_real("beta", beta, low=0.0, high=1.0, low_open=True, high_open=True)

    def gap(eps: float) -> float:
        return one_run_p_value(eps, guesses=guesses, correct=correct, canaries=canaries,
                               delta=delta) - beta

    if gap(0.0) >= 0:
        return 0.0
    hi = 1.0
    while gap(hi) < 0:
        hi *= 2
        if hi > 1e3:
            return math.inf
    return float(optimize.brentq(gap, 0.0, hi, xtol=1e-9))


@dataclass(frozen=True, slots=True, kw_only=True)
class OneRunBound:
    """The one-run lower bound and how it was obtained.

    Attributes:
        epsilon_lower: ε_lo at the run's δ (a lower bound at confidence ``1 − beta``).
        epsilon_lower_pure: ε_lo at δ = 0 (the pure-DP bound, as the paper also reports).
        confidence: 1 − β.
        canaries: m, the randomised canaries.
        guesses: r = k₊ + k₋ of the winning guess set.
        correct: v, correct guesses of the winning set.
        k_plus: Canaries guessed "in" (highest scores).
        k_minus: Canaries guessed "out" (lowest scores).
        tested: How many guess sets were tried (β was divided by this).
        score_auc: How well the scores separate included from excluded canaries (ROC area;
            descriptive: 0.5 is chance) — a membership attack on the canaries.
    """

    epsilon_lower: float
    epsilon_lower_pure: float
    confidence: float
    canaries: int
    guesses: int
    correct: int
    k_plus: int
    k_minus: int
    tested: int
    score_auc: float


def guess_grid(m: int) -> list[tuple[int, int]]:
    """The (k₊, k₋) pairs tried, fixed before any score is seen."""
    sizes = sorted({max(1, m // 16), max(1, m // 8), max(1, m // 4)})
    grid = [(k, 0) for k in sizes] + [(k, k) for k in sizes if 2 * k <= m]
    return grid


def one_run_audit(scores: Sequence[float] | npt.NDArray[np.float64],
                  included: Sequence[bool] | npt.NDArray[np.bool_], *, delta: float,
                  beta: float = 0.05) -> OneRunBound:
    """The one-run lower bound from canary ``scores`` (higher = "more likely in").

    Args:
        scores: One score per canary, computed from the released output only.
        included: Sᵢ = +1, drawn i.i.d. Bernoulli(½) before training, independent of all else.
        delta: The accountant's δ (the bound is at this δ; the δ = 0 bound is reported too).
        beta: 1 − confidence; divided by the number of guess sets tried.

    Raises:
        ConfigurationError: Lengths differ, fewer than two canaries, or a non-finite score.
    """
    s = np.asarray(scores, dtype=np.float64)
    inc = np.asarray(included, dtype=bool)
    if s.ndim != 1 or s.shape != inc.shape:
        raise ConfigurationError(
            f"`scores` and `included` must be 1-D of one length. Found {s.shape}, {inc.shape}.")
    m = len(s)
    if m < 2:
        raise ConfigurationError(f"the one-run audit needs >= 2 canaries. Found {m}.")
    if not np.isfinite(s).all():
        raise ConfigurationError("canary scores contain NaN or Inf.")
    grid = guess_grid(m)
    level = beta / len(grid)
    order = np.argsort(-s, kind="stable")  # highest first; ties broken by canary index
    best: tuple[float, int, int, int, int] = (-1.0, 0, 0, 0, 0)
    for kp, km in grid:
        right = int(inc[order[:kp]].sum()) + (int((~inc[order[m - km:]]).sum()) if km else 0)
        bound = one_run_lower_bound(guesses=kp + km, correct=right, canaries=m, delta=delta,
                                    beta=level)
        if bound > best[0]:
            best = (bound, kp + km, right, kp, km)
    bound, r, v, kp, km = best
    pure = one_run_lower_bound(guesses=r, correct=v, canaries=m, delta=0.0, beta=level)
    auc = math.nan
    if inc.any() and (~inc).any():
        u = stats.mannwhitneyu(s[inc], s[~inc], alternative="two-sided").statistic
        auc = float(u) / (int(inc.sum()) * int((~inc).sum()))
    return OneRunBound(epsilon_lower=bound, epsilon_lower_pure=pure, confidence=1 - beta,
                       canaries=m, guesses=r, correct=v, k_plus=kp, k_minus=km,
                       tested=len(grid), score_auc=auc)
