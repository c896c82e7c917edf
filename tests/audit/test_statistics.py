"""The audit's statistics against anchors we control: closed forms, published ceilings, and
mechanisms whose exact ε is known (an audit that claims more than the truth is caught here)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import expit

from privfl.audit.divergence import gaussian_pair_epsilon, gdp_epsilon, hockey_stick
from privfl.audit.estimate import ThreatModel, canary_estimate, null_z_scores
from privfl.audit.membership import clopper_pearson_epsilon, loss_threshold_attack
from privfl.audit.one_run import (
    guess_grid,
    one_run_audit,
    one_run_lower_bound,
    one_run_p_value,
)
from privfl.errors import ConfigurationError

DELTA = 1e-5


# --- two-Gaussian ε ------------------------------------------------------------------------
@pytest.mark.parametrize(("mu", "eps"), [(0.5, 1.99), (1.0, 4.38), (2.0, 10.0)])
def test_gdp_epsilon_matches_the_closed_form_anchors(mu: float, eps: float) -> None:
    got = gdp_epsilon(mu, DELTA)
    assert got == pytest.approx(eps, abs=0.01)
    # and it solves δ(ε) = Φ(−ε/μ + μ/2) − e^ε Φ(−ε/μ − μ/2) = δ
    delta = stats.norm.cdf(-got / mu + mu / 2) - math.exp(got) * stats.norm.cdf(-got / mu - mu / 2)
    assert delta == pytest.approx(DELTA, rel=1e-6)


def test_gaussian_pair_epsilon_is_symmetric_and_reduces_to_gdp() -> None:
    a = gaussian_pair_epsilon((0.0, 1.0), (1.5, 1.3), DELTA)
    b = gaussian_pair_epsilon((1.5, 1.3), (0.0, 1.0), DELTA)
    assert a == pytest.approx(b, rel=1e-9)
    assert gaussian_pair_epsilon((0.0, 2.0), (3.0, 2.0), DELTA) == pytest.approx(
        gdp_epsilon(1.5, DELTA), rel=1e-9)
    assert gaussian_pair_epsilon((0.0, 1.0), (0.0, 1.0), DELTA) == 0.0
    # unequal variances make the privacy loss unbounded: ε exceeds the equal-variance value
    assert gaussian_pair_epsilon((0.0, 1.0), (1.0, 1.2), DELTA) > gdp_epsilon(1.0, DELTA)


def test_hockey_stick_at_the_returned_epsilon_is_delta() -> None:
    p, q = (0.0, 1.0), (2.0, 0.7)
    eps = gaussian_pair_epsilon(p, q, DELTA)
    assert max(hockey_stick(eps, p, q), hockey_stick(eps, q, p)) == pytest.approx(DELTA, rel=1e-4)
    # Monte-Carlo check of one hockey-stick value
    rng = np.random.default_rng(0)
    y = rng.normal(q[0], q[1], 2_000_000)
    llr = stats.norm.logpdf(y, *q) - stats.norm.logpdf(y, *p)
    mc = np.mean(np.maximum(0.0, 1 - np.exp(1.0 - llr)))  # H_1(Q‖P) = E_Q[(1 − e^{ε−L})⁺]
    assert hockey_stick(1.0, q, p) == pytest.approx(mc, rel=0.01)


@pytest.mark.parametrize("bad", [(0.0, 0.0), (math.nan, 1.0), (0.0, -1.0)])
def test_bad_gaussians_are_refused(bad: tuple[float, float]) -> None:
    with pytest.raises(ConfigurationError):
        gaussian_pair_epsilon(bad, (0.0, 1.0), DELTA)


# --- one-run (Steinke et al.) --------------------------------------------------------------
def test_one_run_ceilings_of_the_paper() -> None:
    assert one_run_lower_bound(guesses=1000, correct=1000, canaries=1000, delta=DELTA,
                               beta=0.05) == pytest.approx(5.78, abs=0.01)
    for eps, expected in ((2, 1.84), (4, 3.60)):
        v = round(1000 * float(expit(eps)))
        assert one_run_lower_bound(guesses=1000, correct=v, canaries=1000, delta=DELTA,
                                   beta=0.05) == pytest.approx(expected, abs=0.02)


def test_one_run_p_value_grows_with_epsilon_and_with_delta() -> None:
    ps = [one_run_p_value(e, guesses=100, correct=80, canaries=200, delta=DELTA)
          for e in (0.0, 0.5, 1.0, 2.0)]
    assert ps == sorted(ps)
    assert one_run_p_value(1.0, guesses=100, correct=80, canaries=200, delta=1e-2) > ps[2]
    assert one_run_lower_bound(guesses=10, correct=5, canaries=10, delta=0.0, beta=0.05) == 0.0


def test_one_run_bound_is_sound_on_randomized_response_at_a_known_epsilon() -> None:
    """ε-randomised response is exactly ε-DP: its bound must stay ≤ ε (w.p. ≥ 1 − β)."""
    rng = np.random.default_rng(1)
    eps, m, trials = 2.0, 400, 200
    exceed = 0
    for _ in range(trials):
        inc = rng.random(m) < 0.5
        truthful = rng.random(m) < expit(eps)
        scores = np.where(truthful == inc, 1.0, -1.0) + rng.normal(0, 1e-3, m)
        exceed += one_run_audit(scores, inc, delta=0.0).epsilon_lower > eps
    assert exceed / trials <= 0.05


def test_one_run_bound_is_sound_on_a_gaussian_mechanism_and_detects_a_wrong_claim() -> None:
    """Scores N(μ·S, 1) are μ-GDP. The bound stays below the true ε, and above a claim of
    ε = 1 made about a mechanism that is really much leakier (the audit catches the lie)."""
    rng = np.random.default_rng(2)
    for mu in (0.5, 1.0, 6.0):
        truth = gdp_epsilon(mu, DELTA)
        bounds = []
        for _ in range(30):
            inc = rng.random(1000) < 0.5
            scores = rng.normal(np.where(inc, mu, 0.0), 1.0)
            bounds.append(one_run_audit(scores, inc, delta=DELTA).epsilon_lower)
        assert max(bounds) <= truth, (mu, max(bounds), truth)
        if mu == 6.0:
            assert min(bounds) > 1.0


def test_guess_grid_is_fixed_before_the_scores() -> None:
    assert guess_grid(256) == [(16, 0), (32, 0), (64, 0), (16, 16), (32, 32), (64, 64)]
    res = one_run_audit(np.arange(256.0), np.arange(256) >= 128, delta=DELTA)
    assert res.tested == 6 and res.score_auc == 1.0 and res.correct == res.guesses


@pytest.mark.parametrize(("scores", "included"), [([1.0], [True]), ([1.0, 2.0], [True]),
                                                  ([math.nan, 1.0], [True, False])])
def test_one_run_refuses_bad_input(scores: list[float], included: list[bool]) -> None:
    with pytest.raises(ConfigurationError):
        one_run_audit(scores, included, delta=DELTA)


# --- membership inference ------------------------------------------------------------------
def test_clopper_pearson_anchor_from_the_research_note() -> None:
    """n₁ = n₀ = 1000, TPR 0.5 at FPR 0.01: point estimate ln 50 = 3.91, bound ≈ 3.24."""
    assert clopper_pearson_epsilon(tp=500, fn=500, fp=10, tn=990, delta=DELTA,
                                   beta=0.05) == pytest.approx(3.24, abs=0.01)
    # upper limits of *both* error rates: zero errors still give a finite bound
    assert clopper_pearson_epsilon(tp=1000, fn=0, fp=0, tn=1000, delta=DELTA,
                                   beta=0.05) == pytest.approx(5.6, abs=0.1)


def test_loss_threshold_attack_on_known_distributions() -> None:
    rng = np.random.default_rng(3)
    same = loss_threshold_attack(rng.exponential(1, 2000), rng.exponential(1, 2000), delta=DELTA)
    assert abs(same.auc - 0.5) < 0.03 and same.epsilon_lower == 0.0
    # members have lower loss: AUC = P[member < non-member] = Φ(1/√2) for N(0,1) vs N(1,1)
    res = loss_threshold_attack(rng.normal(0, 1, 4000), rng.normal(1, 1, 4000), delta=DELTA)
    assert res.auc == pytest.approx(stats.norm.cdf(1 / math.sqrt(2)), abs=0.015)
    assert 0.0 < res.epsilon_lower < gdp_epsilon(1.0, DELTA)
    assert res.advantage == pytest.approx(2 * stats.norm.cdf(0.5) - 1, abs=0.03)


def test_membership_bound_is_sound_on_a_gaussian_mechanism() -> None:
    rng = np.random.default_rng(4)
    mu = 1.0
    for _ in range(20):
        res = loss_threshold_attack(rng.normal(0, 1, 1000), rng.normal(mu, 1, 1000),
                                    delta=DELTA)
        assert res.epsilon_lower <= gdp_epsilon(mu, DELTA)


# --- canary estimate (Andrew et al.) --------------------------------------------------------
@pytest.mark.parametrize("dim", [5, 60, 5000])
def test_null_z_scores_of_uniform_directions_are_standard_normal(dim: int) -> None:
    rng = np.random.default_rng(dim)
    v = rng.normal(size=(4000, dim))
    target = rng.normal(size=dim)
    cos = (v @ target) / (np.linalg.norm(v, axis=1) * np.linalg.norm(target))
    z = null_z_scores(cos, dim)
    assert stats.kstest(z, "norm").pvalue > 0.01


def test_null_z_scores_stay_finite_far_in_the_tail() -> None:
    z = null_z_scores([0.999, -0.999, 0.0], 10**6)
    assert np.isfinite(z).all() and z[0] > 100 and z[1] < -100 and z[2] == pytest.approx(0.0)


def test_canary_estimate_recovers_a_gaussian_mechanism() -> None:
    """Inserted z ~ N(μ, 1) is μ-GDP; the equal-variance form recovers ε(μ) (finite-k noise),
    the two-Gaussian form is the paper's (it is biased upwards at small δ, pitfall 2)."""
    rng = np.random.default_rng(5)
    d = 10**6
    ins = rng.normal(1.0, 1.0, 1000) / math.sqrt(d)
    out = rng.normal(0.0, 1.0, 1000) / math.sqrt(d)
    est = canary_estimate(ins, out, dim=d, delta=DELTA)
    assert est.epsilon_gdp == pytest.approx(gdp_epsilon(1.0, DELTA), abs=0.5)
    assert est.epsilon_estimate >= est.epsilon_gdp - 1e-9
    assert abs(est.null_mean_z) < 0.15 and abs(est.null_std_z - 1) < 0.1
    none = canary_estimate(rng.normal(0, 1, 1000), rng.normal(0, 1, 1000),
                           dim=2, delta=DELTA, threat_model=ThreatModel.ALL_ITERATES)
    assert none.epsilon_gdp < 0.5


def test_canary_estimate_refuses_too_few_canaries() -> None:
    with pytest.raises(ConfigurationError):
        canary_estimate([0.1], [0.0, 0.1], dim=100, delta=DELTA)
    with pytest.raises(ConfigurationError):
        null_z_scores([1.5], 100)
