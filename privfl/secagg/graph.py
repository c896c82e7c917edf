"""Who masks with whom: the complete graph (SecAgg) or a random sparse graph (SecAgg+).

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, CCS 2020) replaces the complete graph of
Bonawitz et al. (2017) with a random k-regular graph: each client masks with, and secret-shares
to, only its k neighbours. privfl uses a random Harary graph: clients in a uniformly random
cyclic order, each connected to its k/2 nearest on either side (k even).

The degree k and the Shamir threshold t among each client's m = k + 1 holders are derived,
not fixed (:mod:`privfl.secagg.params`): from the number n of selected clients, the fraction γ
of *all n* that may collude with the server, the fraction δ that may drop, and the security
and correctness parameters σ and η, so that an honest client's input is revealed, or the honest
survivors' graph splits, with probability ≤ 2^-(σ+1) each, and a round aborts with probability
≤ 2^-η. SecAgg uses the complete graph with t = ⌊γn⌋ + 1.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from privfl.secagg.params import SecAggParams, ServerModel, complete_params, find_params

__all__ = ["harary_graph", "harary_rows", "plan_graph"]


def plan_graph(n: int, *, sparse: bool, dropout: float, collusion: float,
               model: ServerModel = ServerModel.SEMI_HONEST, security: int = 40,
               correctness: int = 20) -> SecAggParams:
    """K and t for ``n`` selected clients: SecAgg+ when ``sparse``, else the complete graph.

    Raises:
        ConfigurationError: No degree and threshold meet the parameters (see
            :func:`~privfl.secagg.params.find_params`).
    """
    if sparse:
        return find_params(n, collusion=collusion, dropout=dropout, security=security,
                           correctness=correctness, model=model)
    return complete_params(n, collusion=collusion, dropout=dropout, security=security,
                           correctness=correctness, model=model)


def _order(ids: list[int], seed: bytes | None) -> list[int]:
    """A uniformly random permutation: from the OS CSPRNG, or derived from ``seed``.

    The seeded form is a Fisher–Yates shuffle driven by SHA-256(seed ‖ i): every party that
    knows the seed computes the same order (modulo bias ≤ n / 2^256).
    """
    order = ids[:]
    if seed is None:
        secrets.SystemRandom().shuffle(order)
        return order
    for i in range(len(order) - 1, 0, -1):
        draw = hashlib.sha256(b"privfl-harary-order" + seed + i.to_bytes(4, "little")).digest()
        j = int.from_bytes(draw, "little") % (i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def harary_rows(n: int, degree: int, seed: bytes | None = None) -> npt.NDArray[np.int64]:
    """The random Harary graph on vertices 0 … n − 1, as an (n, k) array of sorted neighbours.

    Row i lists vertex i's neighbours; the cyclic order is :func:`_order` of 0 … n − 1, so
    for ``ids`` sorted, ``ids[rows]`` is :func:`harary_graph` of ``ids`` (same seed).
    """
    if degree >= n - 1:  # complete: every other vertex
        return np.nonzero(~np.eye(n, dtype=bool))[1].reshape(n, max(n - 1, 0)).astype(np.int64)
    order = np.asarray(_order(list(range(n)), seed), dtype=np.int64)
    half = degree // 2
    steps = np.concatenate([np.arange(1, half + 1), -np.arange(1, half + 1)])
    rows = np.empty((n, 2 * half), dtype=np.int64)
    # 2·half ≤ degree < n − 1: the 2·half neighbours on the cycle are distinct
    rows[order] = order[(np.arange(n)[:, None] + steps[None, :]) % n]
    rows.sort(axis=1)
    return rows


def harary_graph(clients: Sequence[int], degree: int,
                 seed: bytes | None = None) -> dict[int, tuple[int, ...]]:
    """Random Harary graph of even ``degree`` (or complete if degree = n − 1).

    Args:
        clients: The vertices.
        degree: k, even unless the graph is complete.
        seed: Where the random cyclic order comes from: ``None`` draws it from the OS CSPRNG
            (the server's choice); bytes derive it deterministically, so that clients can
            recompute a graph drawn from randomness they contributed.
    """
    ids = np.asarray(sorted(clients), dtype=np.int64)
    neighbours = ids[harary_rows(len(ids), degree, seed)].tolist()
    return {c: tuple(row) for c, row in zip(ids.tolist(), neighbours, strict=True)}
