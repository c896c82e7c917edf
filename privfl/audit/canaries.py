"""Canaries: the records an audit plants in a run and scores from what the run releases.

Two kinds, one per privacy unit:

* :class:`CanaryClients` (client-level units, Andrew et al. 2024): m directions cⱼ uniform on the
  unit sphere of the parameter space, each inserted as an extra client with probability ½ (the
  Bernoulli draw Steinke et al.'s bound needs; the ones left out are the held-out canaries of
  Andrew et al.). An inserted canary client ignores its data and sends ``scale``·cⱼ as its model
  delta; it is sampled, clipped, noised and securely summed exactly like a real client, because
  it *is* a client of the federation. With clipping in the run the scale is 10⁴, so the clip
  brings it to exactly C.
* :class:`CanaryExamples` (example-level units): m records whose features are uniform within
  each feature's training range (in range, but far from any real record) and whose label is
  uniform; each is added
  with probability ½ to the training set of a client drawn uniformly, independently of the
  inclusion bit. DP-SGD then samples, clips and noises it like any other example.

Canaries are seeded from (audit seed, canary index): the audit is a measurement, reproducible
by design, and the directions of held-out canaries never enter training.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from privfl._validation import require_int, require_positive
from privfl.core.client import ClientResult
from privfl.core.params import ParamSpec
from privfl.data.dataset import ArrayDataset, FederatedDataset
from privfl.errors import ConfigurationError

__all__ = [
    "CLIPPED_SCALE",
    "CanaryClientUpdate",
    "CanaryClients",
    "CanaryExamples",
]

CLIPPED_SCALE = 1e4
"""Scale of a canary's update when the run clips client updates (the clip sets its norm)."""

_CACHE_FLOATS = 2**25  # directions are cached as a float32 matrix up to 128 MiB


def _inclusion(seed: int, count: int, salt: int) -> npt.NDArray[np.bool_]:
    return np.random.default_rng([seed, salt]).random(count) < 0.5


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryClients:
    """m canary clients in a d-dimensional parameter space.

    Attributes:
        count: m, the canaries drawn (about half are inserted).
        dim: d, the length of the flattened trainable parameter vector.
        seed: Seeds the directions and the inclusion bits.
        scale: Norm of an inserted canary's update (``CLIPPED_SCALE`` when the run clips).
    """

    count: int
    dim: int
    seed: int = 0
    scale: float = CLIPPED_SCALE
    _cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        require_int("count", self.count, minimum=4, tip="an audit needs a handful of canaries.")
        require_int("dim", self.dim, minimum=2)
        require_int("seed", self.seed, minimum=0)
        require_positive("scale", self.scale)

    @property
    def included(self) -> npt.NDArray[np.bool_]:
        """Sᵢ = +1: which canaries are inserted (Bernoulli(½), drawn before training)."""
        return _inclusion(self.seed, self.count, 1)

    @property
    def inserted(self) -> npt.NDArray[np.int64]:
        """Indices of the inserted canaries, in the order they join the federation."""
        return np.flatnonzero(self.included).astype(np.int64)

    def direction(self, j: int) -> npt.NDArray[np.float64]:
        """cⱼ, a unit vector uniform on the sphere (a normalised Gaussian)."""
        v = np.random.default_rng([self.seed, 2, j]).standard_normal(self.dim)
        out: npt.NDArray[np.float64] = v / np.linalg.norm(v)
        return out

    def _blocks(self, size: int = 64) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
        if self.count * self.dim <= _CACHE_FLOATS:
            if "m" not in self._cache:
                self._cache["m"] = np.stack(
                    [self.direction(j) for j in range(self.count)]).astype(np.float32)
            yield 0, self._cache["m"]
            return
        for a in range(0, self.count, size):
            b = min(self.count, a + size)
            yield a, np.stack([self.direction(j) for j in range(a, b)]).astype(np.float32)

    def cosines(self, vector: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """cos(cⱼ, vector) for every canary j (0 for a zero vector)."""
        v = np.asarray(vector, dtype=np.float64).reshape(-1)
        if v.shape != (self.dim,):
            raise ConfigurationError(f"expected a vector of length {self.dim}. Found {v.shape}.")
        norm = float(np.linalg.norm(v))
        out = np.zeros(self.count)
        if norm == 0 or not np.isfinite(norm):
            return out
        unit = (v / norm).astype(np.float32)
        for a, block in self._blocks():
            out[a:a + len(block)] = block.astype(np.float64) @ unit.astype(np.float64)
        return out

    def add_to(self, data: FederatedDataset) -> FederatedDataset:
        """``data`` with one client per inserted canary appended (ids N, N+1, …).

        A canary client holds placeholder records (zeros) as many as the median client, so that
        example weighting, when the run uses it, gives it a typical weight; it never reads them.
        """
        size = max(1, int(np.median([len(c) for c in data.clients])))
        shape = (size, *data.input_shape)
        dummy = ArrayDataset(np.zeros(shape, np.float32), np.zeros(size, np.int64))
        extra = tuple(dummy for _ in self.inserted)
        return FederatedDataset(data.clients + extra, data.test, data.num_classes, data.name)


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryClientUpdate:
    """A client update under which clients ``first_id``, ``first_id + 1``, … are canaries.

    A canary client sends ``scale``·cⱼ; every other client runs ``inner``. The canary ids and
    directions are public parameters of the audit (the auditor plays those clients).

    Attributes:
        inner: The real clients' update (local SGD or FedProx; example-level DP is audited with
            :class:`CanaryExamples` instead).
        canaries: The canary design.
        first_id: Client id of the first inserted canary (the real federation's size N).
    """

    inner: Any
    canaries: CanaryClients
    first_id: int

    def __post_init__(self) -> None:
        if hasattr(self.inner, "round_event"):
            raise ConfigurationError(
                "canary clients audit client-level DP; example-level DP (DP-SGD) is audited "
                "with canary examples. Tip: `AuditUnit.EXAMPLE`.")

    def client_copy(self) -> CanaryClientUpdate:
        """The client-side copy (the inner update's own, when it has one)."""
        inner = self.inner.client_copy() if hasattr(self.inner, "client_copy") else self.inner
        return CanaryClientUpdate(inner=inner, canaries=self.canaries, first_id=self.first_id)

    def train(self, model: Any, spec: ParamSpec, global_params: npt.NDArray[np.float32],
              data: ArrayDataset, rng: np.random.Generator, client_id: int,
              round_id: int) -> ClientResult:
        """A canary's fixed delta, or the inner update's training."""
        slot = client_id - self.first_id
        inserted = self.canaries.inserted
        if slot < 0 or slot >= len(inserted):
            result: ClientResult = self.inner.train(model, spec, global_params, data, rng,
                                                    client_id, round_id)
            return result
        delta = (self.canaries.scale * self.canaries.direction(int(inserted[slot])))
        return ClientResult(delta=delta.astype(np.float32), num_examples=len(data),
                            train_loss=float("nan"), steps=0)


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryExamples:
    """m canary records planted in clients' training sets.

    Attributes:
        count: m, the canaries drawn (about half are planted).
        seed: Seeds the records, their labels, their owners and the inclusion bits.
    """

    count: int
    seed: int = 0

    def __post_init__(self) -> None:
        require_int("count", self.count, minimum=4, tip="an audit needs a handful of canaries.")
        require_int("seed", self.seed, minimum=0)

    @property
    def included(self) -> npt.NDArray[np.bool_]:
        """Sᵢ = +1: which canaries are planted (Bernoulli(½), drawn before training)."""
        return _inclusion(self.seed, self.count, 3)

    def records(self, data: FederatedDataset) -> ArrayDataset:
        """The m canary records: features uniform in each feature's training range.

        Labels are uniform too. The records are in range, so clipping treats them like data,
        and far from every real record, so a model that memorises them shows it.
        """
        pool_x = np.concatenate([c.x for c in data.clients])
        rng = np.random.default_rng([self.seed, 4])
        lo, hi = pool_x.min(axis=0), pool_x.max(axis=0)
        x = rng.uniform(lo, hi, (self.count, *pool_x.shape[1:]))
        y = rng.integers(0, data.num_classes, self.count)
        return ArrayDataset.of(x, y)

    def owners(self, num_clients: int) -> npt.NDArray[np.int64]:
        """The client each canary would join, drawn independently of the inclusion bits."""
        return np.random.default_rng([self.seed, 5]).integers(0, num_clients, self.count)

    def add_to(self, data: FederatedDataset) -> FederatedDataset:
        """``data`` with every included canary appended to its owner's training set."""
        canaries = self.records(data)
        owners = self.owners(data.num_clients)
        inc = self.included
        clients = []
        for k, c in enumerate(data.clients):
            mine = np.flatnonzero(inc & (owners == k))
            if len(mine):
                c = ArrayDataset(np.concatenate([c.x, canaries.x[mine]]),
                                 np.concatenate([c.y, canaries.y[mine]]))
            clients.append(c)
        return FederatedDataset(tuple(clients), data.test, data.num_classes, data.name)
