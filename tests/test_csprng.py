from __future__ import annotations

import pickle

import numpy as np
import pytest
from scipy import stats

from privfl._csprng import SecureRandom


def test_normal_is_standard_normal() -> None:
    z = SecureRandom().normal(200_000)
    assert abs(z.mean()) < 0.01 and z.std() == pytest.approx(1.0, abs=0.01)
    assert stats.kstest(z[:20_000], "norm").pvalue > 1e-4


def test_uniform_and_keys() -> None:
    u = SecureRandom().uniform(100_000)
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u[:20_000], "uniform").pvalue > 1e-4
    a, b = SecureRandom(b"k" * 32), SecureRandom(b"k" * 32)
    assert a.bytes(64) == b.bytes(64)  # same key, same stream
    assert SecureRandom().bytes(32) != SecureRandom().bytes(32)


def test_cannot_be_pickled() -> None:
    with pytest.raises(TypeError, match="secret"):
        pickle.dumps(SecureRandom())


def test_bad_key() -> None:
    with pytest.raises(ValueError):
        SecureRandom(b"short")
    assert np.isfinite(SecureRandom().normal(10, 3.0)).all()
