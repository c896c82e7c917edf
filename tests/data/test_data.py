from __future__ import annotations

import numpy as np
import pytest

from privfl.data import (
    ArrayDataset,
    Partition,
    dirichlet_partition,
    federated_digits,
    iid_partition,
    load_digits,
    shard_partition,
    synthetic_federated,
)
from privfl.errors import ConfigurationError, DataError


def _check_partition(parts: list[np.ndarray], n: int) -> None:
    allidx = np.concatenate(parts)
    assert len(allidx) == n and len(np.unique(allidx)) == n
    assert all(len(p) > 0 for p in parts)


def test_digits_split() -> None:
    train, test = load_digits()
    assert len(train) + len(test) == 1797
    assert train.x.shape[1] == 64 and train.x.min() >= 0 and train.x.max() <= 1
    assert set(np.unique(test.y)) == set(range(10))


def test_partitions_cover_everything_once() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 1000)
    _check_partition(iid_partition(1000, 7, rng), 1000)
    _check_partition(dirichlet_partition(labels, 10, 0.5, rng), 1000)
    _check_partition(shard_partition(labels, 10, 2, rng), 1000)


def test_dirichlet_alpha_controls_skew() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 5000)

    def skew(alpha: float) -> float:
        parts = dirichlet_partition(labels, 10, alpha, rng)
        return float(np.mean([np.bincount(labels[p], minlength=10).max() / len(p)
                              for p in parts]))

    assert skew(0.1) > skew(100.0) + 0.2


def test_shards_limit_classes_per_client() -> None:
    labels = np.repeat(np.arange(10), 100)
    parts = shard_partition(labels, 10, 2, np.random.default_rng(0))
    assert max(len(np.unique(labels[p])) for p in parts) <= 2


@pytest.mark.parametrize("alpha", [0.0, -1.0])
def test_dirichlet_alpha_must_be_positive(alpha: float) -> None:
    with pytest.raises(ConfigurationError, match="alpha"):
        dirichlet_partition(np.zeros(10, int), 2, alpha, np.random.default_rng(0))


def test_bad_data() -> None:
    with pytest.raises(DataError, match="at least one example"):
        ArrayDataset.of(np.zeros((0, 3)), np.zeros(0))
    with pytest.raises(DataError, match="NaN"):
        ArrayDataset.of(np.full((2, 3), np.nan), np.zeros(2))
    with pytest.raises(DataError):
        ArrayDataset.of(np.zeros((2, 3)), np.zeros(3))
    with pytest.raises(DataError, match="num_clients"):
        iid_partition(3, 5, np.random.default_rng(0))


def test_federated_digits_and_synthetic() -> None:
    fd = federated_digits(10, partition=Partition.DIRICHLET, alpha=0.5)
    assert fd.num_clients == 10 and fd.num_classes == 10
    assert sum(len(c) for c in fd.clients) + len(fd.test) == 1797
    syn = synthetic_federated(30, alpha=1.0, beta=1.0, seed=1)
    assert syn.num_clients == 30 and syn.input_shape == (60,)
    sizes = [len(c) for c in syn.clients]
    assert max(sizes) > 3 * min(sizes)  # power-law sizes
    again = synthetic_federated(30, alpha=1.0, beta=1.0, seed=1)
    np.testing.assert_array_equal(again.clients[3].x, syn.clients[3].x)
