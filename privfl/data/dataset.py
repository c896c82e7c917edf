"""Array-backed datasets: one client's examples, and a whole federation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from privfl.errors import DataError

__all__ = ["ArrayDataset", "FederatedDataset"]


@dataclass(frozen=True, slots=True)
class ArrayDataset:
    """Features ``x`` (float32, first axis = examples) and integer labels ``y``.

    Raises:
        DataError: Empty, mismatched lengths, non-finite features or negative labels.
    """

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]

    def __post_init__(self) -> None:
        if self.x.ndim < 2:
            raise DataError(f"`x` must have shape (n, ...). Found {self.x.shape}.")
        if self.y.ndim != 1 or self.y.shape[0] != self.x.shape[0]:
            raise DataError(
                f"`y` must have shape ({self.x.shape[0]},). Found {self.y.shape}.")
        if self.x.shape[0] == 0:
            raise DataError("a dataset must hold at least one example. Found 0.")
        if self.x.dtype != np.float32 or self.y.dtype != np.int64:
            raise DataError(
                f"`x` must be float32 and `y` int64. Found {self.x.dtype} and {self.y.dtype}.")
        if not np.isfinite(self.x).all():
            raise DataError("`x` contains NaN or Inf.")
        if self.y.min() < 0:
            raise DataError(f"labels must be >= 0. Found {int(self.y.min())}.")

    @classmethod
    def of(cls, x: npt.ArrayLike, y: npt.ArrayLike) -> ArrayDataset:
        """Build a dataset, converting ``x`` to float32 and ``y`` to int64."""
        return cls(np.ascontiguousarray(x, dtype=np.float32), np.asarray(y, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def subset(self, indices: npt.NDArray[np.integer]) -> ArrayDataset:
        """The examples at ``indices`` (raises :class:`DataError` if empty)."""
        return ArrayDataset(self.x[indices], self.y[indices])

    @property
    def num_classes(self) -> int:
        """1 + the largest label."""
        return int(self.y.max()) + 1


@dataclass(frozen=True, slots=True)
class FederatedDataset:
    """Per-client training sets and one held-out test set for evaluating the global model."""

    clients: tuple[ArrayDataset, ...]
    test: ArrayDataset
    num_classes: int
    name: str = "custom"

    def __post_init__(self) -> None:
        if not self.clients:
            raise DataError("a federated dataset needs at least one client. Found 0.")

    @classmethod
    def from_partition(cls, train: ArrayDataset, test: ArrayDataset,
                       parts: Sequence[npt.NDArray[np.integer]], name: str) -> FederatedDataset:
        """Split ``train`` by ``parts`` (one index array per client)."""
        for k, p in enumerate(parts):
            if len(p) == 0:
                raise DataError(f"client {k} received no examples. Tip: use fewer clients "
                                "or a larger Dirichlet alpha.")
        n_cls = max(train.num_classes, test.num_classes)
        return cls(tuple(train.subset(np.asarray(p)) for p in parts), test, n_cls, name)

    @property
    def num_clients(self) -> int:
        """Number of clients."""
        return len(self.clients)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one example."""
        return tuple(int(s) for s in self.test.x.shape[1:])
