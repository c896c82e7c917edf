"""ε of a pair of Gaussians at a given δ: how an observed statistic turns into an ε.

For distributions P, Q the hockey-stick divergence is

    H_ε(P‖Q) = P(S) − e^ε Q(S),   S = { y : ln p(y)/q(y) > ε },

and a mechanism whose output statistic is P under one neighbour and Q under the other is (ε, δ)
indistinguishable through that statistic iff max(H_ε(P‖Q), H_ε(Q‖P)) ≤ δ. For
P = N(m₁, s₁²) and Q = N(m₂, s₂²) the privacy loss ln p/q − ε is the quadratic a y² + b y + c
with

    a = 1/(2s₂²) − 1/(2s₁²),   b = m₁/s₁² − m₂/s₂²,
    c = m₂²/(2s₂²) − m₁²/(2s₁²) + ln(s₂/s₁) − ε,

so S is a half-line (a = 0), the outside of the roots (a > 0) or the inside (a < 0), and both
masses are sums of normal tail probabilities. :func:`gaussian_pair_epsilon` is the smallest
ε ≥ 0 with both divergences ≤ δ — the conversion Andrew et al. (ICLR 2024) apply to fitted
canary statistics, following Steinke's composition notes (arXiv 2210.00597). With equal
variances it reduces to μ-GDP (Dong, Roth, Su 2019), :func:`gdp_epsilon`:

    δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2).

All tail masses are computed in log space so that δ down to 1e−300 is resolved.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import optimize, special

from privfl._validation import require_real

__all__ = ["gaussian_pair_epsilon", "gdp_epsilon", "hockey_stick"]

_MAX_EPSILON = 1e4


def _log_mass(lo: float, hi: float, m: float, s: float) -> float:
    """The log-probability ln P[lo < Y < hi] for Y ~ N(m, s²) (−inf if empty)."""
    if not lo < hi:
        return -math.inf
    a, b = (lo - m) / s, (hi - m) / s
    if b <= 0:  # lower tail: Φ(b) − Φ(a), both small when b ≪ 0
        la, lb = special.log_ndtr(a), special.log_ndtr(b)
    else:  # upper side: Φ(−a) − Φ(−b)
        la, lb = special.log_ndtr(-b), special.log_ndtr(-a)
    if la == -math.inf:
        return float(lb)
    return float(lb + np.log1p(-np.exp(min(la - lb, 0.0)))) if lb > la else -math.inf


def _region(eps: float, m1: float, s1: float, m2: float, s2: float) -> list[tuple[float, float]]:
    """Intervals where ln p/q > ε, p = N(m1, s1²), q = N(m2, s2²)."""
    a = 1.0 / (2 * s2 * s2) - 1.0 / (2 * s1 * s1)
    b = m1 / (s1 * s1) - m2 / (s2 * s2)
    c = m2 * m2 / (2 * s2 * s2) - m1 * m1 / (2 * s1 * s1) + math.log(s2 / s1) - eps
    inf = math.inf
    if abs(a) <= 1e-12 * max(1.0 / (s1 * s1), 1.0 / (s2 * s2)):
        if b == 0:
            return [(-inf, inf)] if c > 0 else []
        root = -c / b
        return [(root, inf)] if b > 0 else [(-inf, root)]
    disc = b * b - 4 * a * c
    if disc <= 0:
        return [(-inf, inf)] if a > 0 else []
    sq = math.sqrt(disc)
    # numerically stable roots
    q = -0.5 * (b + math.copysign(sq, b))
    r1, r2 = sorted((q / a, c / q if q != 0 else -q / a))
    return [(-inf, r1), (r2, inf)] if a > 0 else [(r1, r2)]


def _log_prob(region: list[tuple[float, float]], m: float, s: float) -> float:
    logs = [_log_mass(lo, hi, m, s) for lo, hi in region]
    return float(special.logsumexp(logs)) if logs else -math.inf


def hockey_stick(eps: float, p: tuple[float, float], q: tuple[float, float]) -> float:
    """H_ε(P‖Q) for P = N(p[0], p[1]²), Q = N(q[0], q[1]²)."""
    region = _region(eps, p[0], p[1], q[0], q[1])
    lp, lq = _log_prob(region, *p), _log_prob(region, *q)
    if lp == -math.inf:
        return 0.0
    return max(0.0, math.exp(lp) * -math.expm1(min(0.0, eps + lq - lp)))


def _check(name: str, dist: tuple[float, float]) -> tuple[float, float]:
    m, s = dist
    require_real(f"{name} mean", m)
    require_real(f"{name} std", s, low=0.0, low_open=True)
    return float(m), float(s)


def gaussian_pair_epsilon(p0: tuple[float, float], p1: tuple[float, float],
                          delta: float) -> float:
    """Smallest ε ≥ 0 with max(H_ε(P₀‖P₁), H_ε(P₁‖P₀)) ≤ δ for two Gaussians (mean, std).

    Returns ``inf`` if no ε ≤ 10⁴ reaches δ (for example two point masses apart).

    Raises:
        ConfigurationError: A std ≤ 0, a non-finite mean, or δ outside (0, 1).
    """
    p0, p1 = _check("P0", p0), _check("P1", p1)
    require_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)

    def excess(eps: float) -> float:
        h = max(hockey_stick(eps, p0, p1), hockey_stick(eps, p1, p0))
        return math.log(max(h, 1e-320)) - math.log(delta)

    if excess(0.0) <= 0:
        return 0.0
    hi = 1.0
    while excess(hi) > 0:
        hi *= 2
        if hi > _MAX_EPSILON:
            return math.inf
    return float(optimize.brentq(excess, hi / 2 if hi > 1 else 0.0, hi, xtol=1e-10))


def gdp_epsilon(mu: float, delta: float) -> float:
    """ε at δ of μ-GDP: the equal-variance case N(0, 1) against N(μ, 1).

    Raises:
        ConfigurationError: μ < 0 or δ outside (0, 1).
    """
    mu = require_real("mu", mu, low=0.0)
    require_real("delta", delta, low=0.0, high=1.0, low_open=True, high_open=True)
    if mu == 0:
        return 0.0
    return gaussian_pair_epsilon((0.0, 1.0), (mu, 1.0), delta)
