"""SecAgg+ degree and threshold from n, γ, δ, σ, η (Bell et al. 2020): exact tails, table, MC."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from privfl.errors import ConfigurationError
from privfl.secagg.graph import harary_graph
from privfl.secagg.params import (
    ServerModel,
    complete_params,
    find_params,
    hypergeom_log_pmf,
    split_probability,
)

SH, SM = ServerModel.SEMI_HONEST, ServerModel.MALICIOUS

# (γ, δ) -> (k, t) for n = 100, 1000, 10⁴: the production parameter finder's published values
# (google-parfait/federated-compute graph_parameter_finder_test.cc, σ = 40, η = 20).
PUBLISHED_SH = {
    (0.05, 0.05): [(12, 6), (30, 17), (34, 20)],
    (0.33, 0.05): [(34, 29), (78, 60), (92, 70)],
    (0.05, 0.33): [(28, 6), (72, 24), (86, 29)],
    (0.33, 0.33): [(68, 34), (286, 150), (422, 221)],
    (0.45, 0.45): [(92, 46), (822, 417), (3494, 1771)],
    (0.33, 0.0): [(26, 25), (38, 36), (42, 40)],
}
PUBLISHED_SM = {
    (0.05, 0.05): [(16, 11), (52, 37), (62, 44)],
    (0.33, 0.05): [(42, 37), (132, 109), (178, 146)],
}


@pytest.mark.parametrize(("gamma", "delta"), sorted(PUBLISHED_SH))
def test_semi_honest_parameters_reproduce_the_published_table(gamma: float, delta: float) -> None:
    for n, (k, t) in zip((100, 1000, 10_000), PUBLISHED_SH[(gamma, delta)], strict=True):
        p = find_params(n, collusion=gamma, dropout=delta)
        assert (p.degree, p.threshold) == (k, t), n


@pytest.mark.parametrize(("gamma", "delta"), sorted(PUBLISHED_SM))
def test_malicious_threshold_is_at_least_the_published_one(gamma: float, delta: float) -> None:
    """privfl's holders include the client itself, so 2t > k + t₁ (one more than production)."""
    for n, (k, _t) in zip((100, 1000, 10_000), PUBLISHED_SM[(gamma, delta)], strict=True):
        p = find_params(n, collusion=gamma, dropout=delta, model=SM)
        sh_at_k = _semi_honest_threshold(n, p.degree, gamma)
        assert 2 * p.threshold > p.degree + sh_at_k
        # at least the published degree, and more where the malicious server's adaptive choice
        # of declared dropouts needs k > ⌊γn⌋ + ⌊δn⌋ (the production finder bounds a random set)
        assert p.degree >= k and p.degree > p.colluders + p.dropouts, (n, p.degree, k)
        if k > p.colluders + p.dropouts:
            assert p.degree - k <= max(6, k // 20), (n, p.degree, k)
        assert p.p_reveal <= 2.0**-41 and p.p_abort <= 2.0**-20


def _semi_honest_threshold(n: int, k: int, gamma: float) -> int:
    log_pmf = hypergeom_log_pmf(n, math.floor(gamma * n + 1e-9), k)
    tails = np.logaddexp.accumulate(log_pmf[::-1])[::-1] + math.log(n)
    return int(np.flatnonzero(tails <= -41 * math.log(2))[0])


@pytest.mark.parametrize("n", [100, 1000, 10_000])
def test_defaults_meet_the_issue_guarantees(n: int) -> None:
    """γ = 1/3, δ = 0.2 of the population: E[revealed honest clients] ≤ 2^-40, aborts ≤ 2^-20."""
    p = find_params(n)
    assert p.p_reveal <= 2.0**-40  # n·Pr[X ≥ t] is also the expected count (linearity)
    assert p.p_split <= 2.0**-41
    assert p.p_abort <= 2.0**-20
    assert (p.degree, p.threshold) == {100: (54, 34), 1000: (162, 100), 10_000: (212, 130)}[n]
    assert p.degree % 2 == 0 and not p.complete


def test_hypergeometric_log_pmf_is_exact() -> None:
    for population, successes, draws in [(100, 33, 54), (1000, 200, 162), (37, 0, 10),
                                         (37, 37, 10)]:
        ours = np.exp(hypergeom_log_pmf(population, successes, draws))
        ref = stats.hypergeom.pmf(np.arange(draws + 1), population, successes, draws)
        np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-300)


def _agrees(counts: list[int], exact: float, n: int) -> bool:
    """The mean of ``counts`` is within 5 standard errors of ``exact``.

    A count of n indicators has variance ≤ n·E[count] whatever their correlation, which bounds
    the standard error where the event is too rare for the sample's own spread (all zeros).
    """
    mean = float(np.mean(counts))
    sd = max(float(np.std(counts)), math.sqrt(n * exact))
    return abs(mean - exact) <= 5 * sd / math.sqrt(len(counts)) + 1e-9


@settings(max_examples=12, deadline=None)
@given(n=st.integers(16, 40), half=st.integers(1, 4), gamma=st.floats(0.05, 0.4),
       t=st.integers(1, 4), seed=st.integers(0, 2**31))
def test_exact_tails_match_monte_carlo_over_real_graphs(n: int, half: int, gamma: float, t: int,
                                                         seed: int) -> None:
    """E[#clients with ≥ t colluding neighbours] over privfl's own Harary graphs = n·Pr[X ≥ t]."""
    k = 2 * half
    colluders = math.floor(gamma * n)
    rng = np.random.default_rng(seed)
    exact = n * float(np.exp(hypergeom_log_pmf(n, colluders, k))[t:].sum())
    trials, counts = 400, []
    for _ in range(trials):
        graph = harary_graph(list(range(n)), k)
        bad = set(rng.choice(n, size=colluders, replace=False).tolist())
        counts.append(sum(len(bad & set(graph[c])) >= t for c in range(n)))
    assert _agrees(counts, exact, n), (float(np.mean(counts)), exact)


@settings(max_examples=8, deadline=None)
@given(n=st.integers(12, 30), half=st.integers(1, 3), frac=st.floats(0.2, 0.6),
       seed=st.integers(0, 2**31))
def test_split_bound_dominates_the_simulated_frequency(n: int, half: int, frac: float,
                                                        seed: int) -> None:
    k = 2 * half
    bad = math.floor(frac * n)
    bound = split_probability(n, k, bad)
    rng = np.random.default_rng(seed)
    trials, splits = 300, 0
    for _ in range(trials):
        graph = harary_graph(list(range(n)), k)
        removed = set(rng.choice(n, size=bad, replace=False).tolist())
        alive = [c for c in range(n) if c not in removed]
        seen, stack = {alive[0]}, [alive[0]]
        while stack:
            for v in graph[stack.pop()]:
                if v not in removed and v not in seen:
                    seen.add(v)
                    stack.append(v)
        splits += len(seen) < len(alive)
    freq = splits / trials
    assert freq <= bound + 5 * math.sqrt(max(bound, 1 / trials) / trials), (freq, bound)


def test_small_populations_get_deterministic_guarantees() -> None:
    """n = 20 (the issue's attack size): k = 12 > ⌊γn⌋ + ⌊δn⌋ = 10, so nothing is left to chance."""
    p = find_params(20)
    assert (p.degree, p.threshold, p.complete) == (12, 7, False)
    assert p.colluders < p.threshold and p.colluders + p.dropouts < p.degree
    assert (p.p_reveal, p.p_split, p.p_abort) == (0.0, 0.0, 0.0)
    assert find_params(3).complete
    c = complete_params(20)
    assert (c.degree, c.threshold) == (19, 7)  # ⌊20/3⌋ + 1, and 7 ≤ 20 − 1 − 4
    m = complete_params(20, model=SM)
    assert 2 * m.threshold > 19 + 1 + 6


def test_infeasible_and_invalid_configurations_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="select more clients"):
        find_params(3, collusion=0.4, dropout=0.4)
    with pytest.raises(ConfigurationError, match="0.9"):
        find_params(100, collusion=0.5, dropout=0.5)
    with pytest.raises(ConfigurationError, match="at least 2"):
        find_params(1)
    with pytest.raises(ConfigurationError, match="security"):
        find_params(100, security=0)
    with pytest.raises(ConfigurationError, match="ServerModel"):
        find_params(100, model="malicious")  # type: ignore[arg-type]


def test_summary_names_every_parameter() -> None:
    text = find_params(1000).summary()
    for part in ("k=162", "t=100", "n=1000", "γ=0.333", "δ=0.2", "semi-honest"):
        assert part in text


@settings(max_examples=10, deadline=None)
@given(n=st.integers(16, 40), half=st.integers(2, 5), delta=st.floats(0.05, 0.4),
       t=st.integers(1, 6), seed=st.integers(0, 2**31))
@example(n=24, half=3, delta=0.25, t=1, seed=0)  # a rare event: all 400 trials see none
def test_abort_tail_matches_monte_carlo_over_real_graphs(n: int, half: int, delta: float, t: int,
                                                          seed: int) -> None:
    """E[#clients with < t surviving neighbours] over privfl's Harary graphs = n·Pr[Y < t]."""
    k = 2 * half
    dropped = math.floor(delta * n)
    rng = np.random.default_rng(seed)
    exact = n * float(np.exp(hypergeom_log_pmf(n, n - dropped, k))[:t].sum())
    trials, counts = 400, []
    for _ in range(trials):
        graph = harary_graph(list(range(n)), k)
        gone = set(rng.choice(n, size=dropped, replace=False).tolist())
        counts.append(sum(k - len(gone & set(graph[c])) < t for c in range(n)))
    assert _agrees(counts, exact, n), (float(np.mean(counts)), exact)
