"""The 8×8 handwritten digits bundled with scikit-learn (1,797 images, 10 classes).

No download: the data ships inside scikit-learn. Pixels (0..16) are scaled to [0, 1].
"""

from __future__ import annotations

import enum

import numpy as np

from privfl._validation import require_real
from privfl.data.dataset import ArrayDataset, FederatedDataset
from privfl.data.partition import dirichlet_partition, iid_partition, shard_partition
from privfl.errors import ConfigurationError

__all__ = ["Partition", "federated_digits", "load_digits"]


def load_digits(*, test_fraction: float = 0.2,
                seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Stratified train/test split of the digits, features flattened to 64 floats in [0, 1]."""
    require_real("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    from sklearn.datasets import load_digits as _sk_load

    bunch = _sk_load()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0)
    y = np.asarray(bunch.target, dtype=np.int64)
    rng = np.random.default_rng(seed)
    test_idx: list[int] = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test_idx.extend(idx[: max(1, round(len(idx) * test_fraction))].tolist())
    mask = np.zeros(len(y), dtype=bool)
    mask[test_idx] = True
    return ArrayDataset.of(x[~mask], y[~mask]), ArrayDataset.of(x[mask], y[mask])


class Partition(enum.Enum):
    """How the training examples are split among clients."""

    IID = "iid"
    DIRICHLET = "dirichlet"
    SHARDS = "shards"


def federated_digits(num_clients: int, *, partition: Partition = Partition.DIRICHLET,
                     alpha: float = 0.5, shards_per_client: int = 2, seed: int = 0,
                     test_fraction: float = 0.2) -> FederatedDataset:
    """Digits split among ``num_clients`` clients; the test split stays with the server."""
    train, test = load_digits(test_fraction=test_fraction, seed=seed)
    rng = np.random.default_rng(seed + 1)
    if partition is Partition.IID:
        parts = iid_partition(len(train), num_clients, rng)
    elif partition is Partition.DIRICHLET:
        parts = dirichlet_partition(train.y, num_clients, alpha, rng)
    elif partition is Partition.SHARDS:
        parts = shard_partition(train.y, num_clients, shards_per_client, rng)
    else:
        raise ConfigurationError(
            f"`partition` must be a Partition. Found {partition!r}.")
    return FederatedDataset.from_partition(train, test, parts, name="digits")
