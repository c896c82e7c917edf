from __future__ import annotations

import numpy as np
import pytest

from privfl.core.sampling import FixedSizeSampling, PoissonSampling
from privfl.errors import ConfigurationError


def test_poisson_rate_and_seeding() -> None:
    s = PoissonSampling(0.2)
    counts = [len(s.sample(list(range(100)), np.random.default_rng(i))) for i in range(400)]
    assert abs(np.mean(counts) - 20) < 1.0  # std of the mean ≈ 0.2
    a = s.sample(list(range(100)), np.random.default_rng(5))
    b = s.sample(list(range(100)), np.random.default_rng(5))
    assert a == b == sorted(a)
    assert s.inclusion_probability(100) == 0.2


def test_fixed_size_without_replacement() -> None:
    s = FixedSizeSampling(7)
    rng = np.random.default_rng(0)
    hits = np.zeros(20)
    for _ in range(2000):
        chosen = s.sample(list(range(20)), rng)
        assert len(chosen) == len(set(chosen)) == 7
        hits[chosen] += 1
    np.testing.assert_allclose(hits / 2000, 7 / 20, atol=0.04)
    with pytest.raises(ConfigurationError, match="clients_per_round"):
        s.sample(list(range(5)), rng)


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5, float("nan")])
def test_poisson_rate_out_of_range(q: float) -> None:
    with pytest.raises(ConfigurationError, match=r"sample_rate"):
        PoissonSampling(q)


def test_fixed_size_must_be_positive() -> None:
    with pytest.raises(ConfigurationError, match="clients_per_round"):
        FixedSizeSampling(0)
