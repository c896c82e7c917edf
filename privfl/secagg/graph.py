"""Who masks with whom: the complete graph (SecAgg) or a random sparse graph (SecAgg+).

SecAgg+ (Bell, Bonawitz, Gascón, Lepoint, Raykova, CCS 2020) replaces the complete graph of
Bonawitz et al. (2017) with a random k-regular graph, k = O(log n): each client masks with,
and secret-shares to, only its k neighbours. privfl uses a random Harary graph: clients in a
uniformly random cyclic order, each connected to its k/2 nearest on either side (k even), the
order drawn from the OS CSPRNG by the server.

Each client's secrets are shared among its m = k + 1 *holders* (its neighbours and itself) with
threshold t chosen as

    t = max(⌊γ·m⌋ + 1, ⌊m/2⌋ + 1)    and required    t ≤ ⌊(1 − δ)·m⌋,

where γ is the tolerated fraction of holders that collude with the server (fewer than t shares
reveal nothing) and δ the tolerated dropout fraction (t holders must survive). t > m/2 also
means no server can collect t shares of *both* secrets of one client from honest holders, since
each honest holder reveals at most one of the two. If the constraints fail for the sparse k,
k grows; at k = n − 1 (complete graph) they either hold or the configuration is refused.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

from privfl.errors import ConfigurationError

__all__ = ["GraphPlan", "harary_graph", "plan_graph"]


@dataclass(frozen=True, slots=True)
class GraphPlan:
    """Degree k (neighbours per client) and Shamir threshold t among m = k + 1 holders."""

    degree: int
    threshold: int
    complete: bool

    @property
    def holders(self) -> int:
        """M = k + 1."""
        return self.degree + 1


def _threshold(m: int, dropout: float, collusion: float) -> tuple[int, bool]:
    t = max(math.floor(collusion * m) + 1, m // 2 + 1)
    return t, t <= math.floor((1.0 - dropout) * m + 1e-9)


def plan_graph(n: int, *, sparse: bool, dropout: float, collusion: float) -> GraphPlan:
    """K and t for ``n`` clients (see module docstring).

    Raises:
        ConfigurationError: No k ≤ n − 1 satisfies the dropout and collusion constraints.
    """
    if n < 2:
        raise ConfigurationError(f"pairwise masking needs at least 2 clients. Found {n}.")
    if not (0.0 <= dropout < 0.5 and 0.0 <= collusion < 1.0):
        raise ConfigurationError(
            f"`dropout_rate` must be in [0, 0.5) and `collusion_fraction` in [0, 1). "
            f"Found {dropout} and {collusion}.")
    k = n - 1
    if sparse:
        k = min(n - 1, 2 * math.ceil(math.log2(n)) + 2)
    while True:
        if k < n - 1 and k % 2:
            k += 1
        t, ok = _threshold(k + 1, dropout, collusion)
        if ok:
            return GraphPlan(degree=k, threshold=t, complete=k == n - 1)
        if k >= n - 1:
            raise ConfigurationError(
                f"with {n} clients no threshold tolerates dropout_rate={dropout} and "
                f"collusion_fraction={collusion} (t={t} of {k + 1} holders). Tip: lower "
                "either, or select more clients.")
        k = min(n - 1, k + 2)


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
