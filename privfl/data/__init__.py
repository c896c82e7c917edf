"""Data: scikit-learn's bundled digits, Synthetic(α, β), and partitioners."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

if TYPE_CHECKING:
    from privfl.data.dataset import (
        ArrayDataset,
        FederatedDataset,
    )
    from privfl.data.digits import (
        Partition,
        federated_digits,
        load_digits,
    )
    from privfl.data.partition import (
        dirichlet_partition,
        iid_partition,
        shard_partition,
    )
    from privfl.data.synthetic import (
        synthetic_federated,
    )

__all__ = [
    "ArrayDataset",
    "FederatedDataset",
    "Partition",
    "dirichlet_partition",
    "federated_digits",
    "iid_partition",
    "load_digits",
    "shard_partition",
    "synthetic_federated",
]

_EXPORTS = {
    "ArrayDataset": "privfl.data.dataset",
    "FederatedDataset": "privfl.data.dataset",
    "Partition": "privfl.data.digits",
    "dirichlet_partition": "privfl.data.partition",
    "federated_digits": "privfl.data.digits",
    "iid_partition": "privfl.data.partition",
    "load_digits": "privfl.data.digits",
    "shard_partition": "privfl.data.partition",
    "synthetic_federated": "privfl.data.synthetic",
}

__getattr__ = lazy_getattr("privfl.data", _EXPORTS)
