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

import secrets
from collections.abc import Sequence

from privfl.secagg.params import SecAggParams, ServerModel, complete_params, find_params

__all__ = ["harary_graph", "plan_graph"]


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


def harary_graph(clients: Sequence[int], degree: int) -> dict[int, tuple[int, ...]]:
    """Random Harary graph of even ``degree`` (or complete if degree = n − 1)."""
    ids = list(clients)
    n = len(ids)
    if degree >= n - 1:
        return {c: tuple(sorted(set(ids) - {c})) for c in ids}
    order = ids[:]
    secrets.SystemRandom().shuffle(order)
    half = degree // 2
    nbrs: dict[int, set[int]] = {c: set() for c in ids}
    for i, c in enumerate(order):
        for j in range(1, half + 1):
            nbrs[c].add(order[(i + j) % n])
            nbrs[c].add(order[(i - j) % n])
    return {c: tuple(sorted(v)) for c, v in nbrs.items()}
