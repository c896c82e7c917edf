"""Loss-threshold membership inference (Yeom et al., CSF 2018) and its Clopper–Pearson bound.

The attacker holds the released model and a candidate record; it guesses "member" iff the
record's loss is at most a threshold τ. Over members (trained on) and non-members (never
trained on) this gives true- and false-positive rates, summarised by the ROC's area (AUC) and
the true-positive rate at a 1% false-positive rate (Carlini et al., S&P 2022).

Any test against an (ε, δ)-DP mechanism satisfies TPR ≤ e^ε·FPR + δ and TNR ≤ e^ε·FNR + δ, so

    ε ≥ max{0, ln((1 − δ − FNR_hi)/FPR_hi), ln((1 − δ − FPR_hi)/FNR_hi)}

with one-sided Clopper–Pearson *upper* limits FPR_hi, FNR_hi at β/2 each (jointly 1 − β).
Thresholds come from a grid of pooled-loss quantiles fixed before any rate is computed, and β is
divided by its size (Bonferroni). Clopper–Pearson assumes independent trials: members and
non-members drawn from one training run are not, unless each record's membership was
randomised (which is Steinke et al.'s setting, :mod:`privfl.audit.one_run`). This bound is
therefore labelled *heuristic*; AUC and TPR@1%FPR are descriptive.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from privfl._validation import require_real
from privfl.errors import ConfigurationError

__all__ = ["MembershipResult", "clopper_pearson_epsilon", "loss_threshold_attack"]

_GRID = 20


def _upper(failures: int, successes: int, beta: float) -> float:
    """One-sided Clopper–Pearson upper limit of a rate with ``failures`` of the total."""
    if successes == 0:
        return 1.0
    return float(stats.beta.ppf(1 - beta, failures + 1, successes))


def clopper_pearson_epsilon(*, tp: int, fn: int, fp: int, tn: int, delta: float,
                            beta: float) -> float:
    """The (1 − β)-confidence ε lower bound of one threshold test (0 when nothing is shown)."""
    fpr_hi = _upper(fp, tn, beta / 2)
    fnr_hi = _upper(fn, tp, beta / 2)
    best = 0.0
    for num, den in ((1 - delta - fnr_hi, fpr_hi), (1 - delta - fpr_hi, fnr_hi)):
        if num > 0 and den > 0:
            best = max(best, math.log(num / den))
    return best


@dataclass(frozen=True, slots=True, kw_only=True)
class MembershipResult:
    """What a loss-threshold attacker achieves.

    Attributes:
        auc: Area under the ROC curve (0.5: no better than chance).
        tpr_at_1pct_fpr: True-positive rate at a false-positive rate ≤ 1%.
        advantage: Yeom's membership advantage max_τ (TPR − FPR).
        epsilon_lower: Clopper–Pearson ε lower bound at confidence ``confidence``, Bonferroni
            over the threshold grid (heuristic: membership was not randomised per record).
        confidence: 1 − β.
        members: Number of member records scored.
        non_members: Number of non-member records scored.
    """

    auc: float
    tpr_at_1pct_fpr: float
    advantage: float
    epsilon_lower: float
    confidence: float
    members: int
    non_members: int


def loss_threshold_attack(member_losses: Sequence[float] | npt.NDArray[np.float64],
                          non_member_losses: Sequence[float] | npt.NDArray[np.float64], *,
                          delta: float, beta: float = 0.05) -> MembershipResult:
    """Run the attack on the two loss samples.

    Raises:
        ConfigurationError: An empty sample, a non-finite loss, or β ∉ (0, 1).
    """
    mem = np.asarray(member_losses, dtype=np.float64)
    non = np.asarray(non_member_losses, dtype=np.float64)
    if mem.ndim != 1 or non.ndim != 1 or not len(mem) or not len(non):
        raise ConfigurationError("the attack needs non-empty 1-D loss samples.")
    if not (np.isfinite(mem).all() and np.isfinite(non).all()):
        raise ConfigurationError("losses contain NaN or Inf.")
    require_real("beta", beta, low=0.0, high=1.0, low_open=True, high_open=True)
    # AUC = P[member loss < non-member loss] + ½ P[tie] (Mann–Whitney U)
    u = stats.mannwhitneyu(non, mem, alternative="two-sided").statistic
    auc = float(u) / (len(mem) * len(non))
    # TPR at FPR ≤ 1%: the largest τ with at most 1% of non-members at loss ≤ τ
    non_sorted = np.sort(non)
    allowed = int(math.floor(0.01 * len(non)))
    tau = non_sorted[allowed] if allowed < len(non) else math.inf
    tpr1 = float(np.mean(mem < tau))
    # advantage over every distinct threshold
    taus = np.unique(np.concatenate([mem, non]))
    tpr = np.searchsorted(np.sort(mem), taus, side="right") / len(mem)
    fpr = np.searchsorted(non_sorted, taus, side="right") / len(non)
    advantage = float(max(0.0, np.max(tpr - fpr)))
    grid = np.unique(np.quantile(np.concatenate([mem, non]), np.linspace(0.025, 0.975, _GRID)))
    level = beta / len(grid)
    bound = 0.0
    for t in grid:
        tp = int(np.sum(mem <= t))
        fp = int(np.sum(non <= t))
        bound = max(bound, clopper_pearson_epsilon(tp=tp, fn=len(mem) - tp, fp=fp,
                                                   tn=len(non) - fp, delta=delta, beta=level))
    return MembershipResult(auc=auc, tpr_at_1pct_fpr=tpr1, advantage=advantage,
                            epsilon_lower=bound, confidence=1 - beta, members=len(mem),
                            non_members=len(non))
