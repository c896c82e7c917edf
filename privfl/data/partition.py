"""Partitioners: split example indices among clients (IID, Dirichlet over labels, shards).

Each returns one sorted index array per client; every client receives at least one example or
a :class:`~privfl.errors.DataError` is raised.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from privfl._validation import require_int, require_positive
from privfl.errors import DataError

__all__ = ["dirichlet_partition", "iid_partition", "shard_partition"]

Index = npt.NDArray[np.int64]


def _check_clients(num_examples: int, num_clients: int) -> None:
    require_int("num_clients", num_clients, minimum=1)
    if num_clients > num_examples:
        raise DataError(f"`num_clients` must be <= the number of examples ({num_examples}). "
                        f"Found {num_clients}.")


def iid_partition(num_examples: int, num_clients: int, rng: np.random.Generator) -> list[Index]:
    """Shuffle and split into ``num_clients`` parts of (almost) equal size."""
    _check_clients(num_examples, num_clients)
    perm = rng.permutation(num_examples)
    return [np.sort(p).astype(np.int64) for p in np.array_split(perm, num_clients)]


def dirichlet_partition(labels: npt.NDArray[np.integer], num_clients: int, alpha: float,
                        rng: np.random.Generator, *, min_size: int = 1,
                        max_tries: int = 100) -> list[Index]:
    """Label-skewed split: for each class c, proportions p_c ~ Dirichlet(α·1) over clients.

    Small α gives each client few classes; large α approaches IID (Hsu et al. 2019).
    Redraws until every client has at least ``min_size`` examples.

    Raises:
        ConfigurationError: ``alpha`` ≤ 0.
        DataError: No draw gave every client ``min_size`` examples within ``max_tries``.
    """
    require_positive("alpha", alpha)
    labels = np.asarray(labels)
    _check_clients(len(labels), num_clients)
    require_int("min_size", min_size, minimum=1)
    classes = np.unique(labels)
    for _ in range(max_tries):
        parts: list[list[int]] = [[] for _ in range(num_clients)]
        for c in classes:
            idx = rng.permutation(np.flatnonzero(labels == c))
            p = rng.dirichlet(np.full(num_clients, alpha))
            cuts = (np.cumsum(p)[:-1] * len(idx)).astype(int)
            for k, chunk in enumerate(np.split(idx, cuts)):
                parts[k].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise DataError(f"no Dirichlet(alpha={alpha}) split gave all {num_clients} clients "
                    f">= {min_size} examples in {max_tries} tries. Tip: raise `alpha` or lower "
                    "`num_clients`.")


def shard_partition(labels: npt.NDArray[np.integer], num_clients: int, shards_per_client: int,
                    rng: np.random.Generator) -> list[Index]:
    """Sort by label, cut into ``num_clients × shards_per_client`` shards, deal them out.

    The pathological non-IID split of McMahan et al. (2017): each client sees about
    ``shards_per_client`` classes.
    """
    require_int("shards_per_client", shards_per_client, minimum=1)
    labels = np.asarray(labels)
    n_shards = num_clients * shards_per_client
    _check_clients(len(labels), num_clients)
    if n_shards > len(labels):
        raise DataError(f"{n_shards} shards need >= {n_shards} examples. Found {len(labels)}.")
    order = np.argsort(labels, kind="stable")
    shards = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards)
    return [np.sort(np.concatenate([shards[s] for s in deal[k::num_clients]])).astype(np.int64)
            for k in range(num_clients)]
