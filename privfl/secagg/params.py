"""SecAgg+ degree k and threshold t derived from n, γ, δ, σ and η (Bell et al., CCS 2020).

Model. ``n`` clients are selected for a round. Before the graph is drawn, an adversary fixes a
set of at most ⌊γ·n⌋ clients that collude with the server (γ is a fraction of *all* selected
clients, not of one neighbourhood), and at most ⌊δ·n⌋ clients drop. The graph is a uniformly
relabelled Harary graph H(n, k): clients on a random cycle, each linked to its k/2 nearest on
either side, so each client's neighbourhood is a uniform k-subset of the other n − 1 clients
(relabelling makes it exchangeable). Each client Shamir-shares its two secrets t-of-(k + 1)
among its neighbours and itself.

Three events are bounded, each by an exact hypergeometric tail (computed in log space from
``gammaln``; no Chernoff or normal approximation) and a union bound over the n clients:

1. *Input revealed* (privacy): some honest client has ≥ t colluding neighbours, who with the
   server rebuild its self-mask seed and its key. Colluding neighbours of a client follow
   Hypergeometric(n, ⌊γn⌋, k), so ``p_reveal = n · Pr[X ≥ t] ≤ 2^-(σ+1)``.
2. *Graph split* (privacy): removing the colluders and the dropped clients (|B| = ⌊γn⌋ + ⌊δn⌋)
   disconnects the honest survivors, and the server learns each component's partial sum.
   H(n, k) minus B is disconnected only if B holds two disjoint runs of k/2 cycle-consecutive
   clients: ``p_split ≤ n(n − k − 1)/2 · (|B|)_k / (n)_k ≤ 2^-(σ+1)`` (zero when |B| < k, as
   H(n, k) is k-connected).
3. *Round aborts* (correctness): some client keeps fewer than t surviving neighbours, so a
   needed secret cannot be rebuilt. Surviving neighbours follow Hypergeometric(n, n − ⌊δn⌋, k):
   ``p_abort = n · Pr[Y < t] ≤ 2^-η``.

σ is split over the two privacy events (2^-(σ+1) each), as in the production finder of
Bell et al.'s co-authors (google-parfait/federated-compute). The search scans k = 2, 4, 6, …
(feasibility is not monotone in k near the edge, so it never bisects): t_lo is the smallest t
meeting (1), t_hi the largest meeting (3); the first k with t_lo ≤ t_hi and (2) wins, with
t = t_lo (the most rounds survive). Where no k < n − 1 works, the complete graph is used with
the smallest t > ⌊γn⌋ (:func:`complete_params`), or the configuration is refused.

A *malicious* server (:attr:`ServerModel.MALICIOUS`) may ask different honest holders for
different shares of one client u. Each honest holder reveals at most one of u's two shares
and u itself only its self-mask share, so with c colluding neighbours the server collects at
most k + 1 + c shares: it breaks u when k + 1 + c ≥ 2t. With c ≤ t₁ − 1, t₁ the semi-honest
threshold at the same k, the malicious threshold is the smallest t with 2t > k + t₁ (that is,
t ≥ ⌊(k + t₁)/2⌋ + 1). privfl's share structure (u holds a share of its own secrets) makes this
one larger than the production code's ⌈(t₁ + k − 1.25)/2⌉ when k + t₁ is even. A malicious
server also chooses *which* clients to declare dropped after seeing the graph, so event (2) is
ruled out deterministically instead: k > ⌊γn⌋ + ⌊δn⌋ (H(n, k) is k-vertex-connected, so removing
fewer than k clients never splits it), and clients refuse a survivor list that declares more
than ⌊δn⌋ of the n selected clients dropped.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln

from privfl.errors import ConfigurationError

__all__ = [
    "MAX_BAD_FRACTION",
    "SecAggParams",
    "ServerModel",
    "check_assumptions",
    "complete_params",
    "find_params",
    "hypergeom_log_pmf",
    "split_probability",
]

MAX_BAD_FRACTION = 0.9
"""Largest γ + δ accepted."""


class ServerModel(enum.Enum):
    """What the server may do besides following the protocol."""

    SEMI_HONEST = "semi-honest"
    """Follows the protocol; sees everything it is sent and colludes with ⌊γn⌋ clients."""
    MALICIOUS = "malicious"
    """May also tell different clients different stories (who dropped, whose keys are whose)."""


@dataclass(frozen=True, slots=True)
class SecAggParams:
    """A degree and threshold with the failure probabilities they guarantee.

    Attributes:
        n: Clients selected in the round.
        degree: k, neighbours per client (n − 1 for the complete graph).
        threshold: t, shares needed among the k + 1 holders of each client's secrets.
        collusion: γ, the fraction of the n clients that may collude with the server.
        dropout: δ, the fraction of the n clients that may drop.
        security: σ; each privacy event is bounded by 2^-(σ+1).
        correctness: η; an abort is bounded by 2^-η.
        model: The server the threshold is sized for.
        p_reveal: Pr[some honest client has ≥ t colluding holders] (union bound).
        p_split: Pr[the honest survivors' graph is disconnected] (union bound).
        p_abort: Pr[some client keeps < t surviving neighbours] (union bound).
    """

    n: int
    degree: int
    threshold: int
    collusion: float
    dropout: float
    security: int
    correctness: int
    model: ServerModel
    p_reveal: float
    p_split: float
    p_abort: float

    @property
    def complete(self) -> bool:
        """Whether every client is every other's neighbour (SecAgg)."""
        return self.degree >= self.n - 1

    @property
    def holders(self) -> int:
        """M = k + 1 (the neighbours and the client itself)."""
        return self.degree + 1

    @property
    def colluders(self) -> int:
        """⌊γn⌋."""
        return _count(self.collusion, self.n)

    @property
    def dropouts(self) -> int:
        """⌊δn⌋."""
        return _count(self.dropout, self.n)

    def summary(self) -> str:
        """One line for reports and logs."""
        return (f"k={self.degree}, t={self.threshold} of {self.holders} holders for n={self.n} "
                f"({self.model.value} server; γ={self.collusion:.3g}, δ={self.dropout:.3g} of "
                f"all clients): Pr[an input revealed] ≤ {self.p_reveal:.2e}, Pr[survivors' "
                f"graph split] ≤ {self.p_split:.2e}, Pr[abort] ≤ {self.p_abort:.2e}")


def _count(fraction: float, n: int) -> int:
    return math.floor(fraction * n + 1e-9)


def _lcomb(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Log of the binomial coefficient C(a, b), −∞ outside 0 ≤ b ≤ a."""
    a_, b_ = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    valid = (b_ >= 0) & (b_ <= a_)
    a_c, b_c = np.where(valid, a_, 0.0), np.where(valid, b_, 0.0)
    out = gammaln(a_c + 1) - gammaln(b_c + 1) - gammaln(a_c - b_c + 1)
    return np.where(valid, out, -np.inf)


def hypergeom_log_pmf(population: int, successes: int, draws: int) -> np.ndarray:
    """Natural log of Pr[X = x], x = 0..draws, X ~ Hypergeometric(population, successes, draws)."""
    x = np.arange(draws + 1)
    return np.asarray(_lcomb(successes, x) + _lcomb(population - successes, draws - x)
                      - _lcomb(population, draws))


def _log_upper_tails(log_pmf: np.ndarray) -> np.ndarray:
    """Log Pr[X ≥ x] for x = 0..len − 1 (exact sums in log space)."""
    return np.asarray(np.logaddexp.accumulate(log_pmf[::-1])[::-1])


def _log_lower_tails(log_pmf: np.ndarray) -> np.ndarray:
    """Log Pr[X < x] for x = 0..len (x = 0 gives −∞)."""
    return np.concatenate([[-np.inf], np.logaddexp.accumulate(log_pmf)])


def split_probability(n: int, degree: int, bad: int) -> float:
    """Union bound on Pr[H(n, k) minus ``bad`` random clients is disconnected].

    Disconnecting a relabelled Harary graph takes two disjoint runs of k/2 consecutive clients
    inside the removed set: at most n(n − k − 1)/2 placements, each inside a random set of size
    |B| with probability (|B|)_k / (n)_k.
    """
    if degree >= n - 1 or bad < degree:
        return 0.0
    log_ff = math.lgamma(bad + 1) - math.lgamma(bad - degree + 1)
    log_ff -= math.lgamma(n + 1) - math.lgamma(n - degree + 1)
    pairs = n * (n - degree - 1) / 2
    return min(1.0, math.exp(math.log(pairs) + log_ff)) if pairs > 0 else 0.0


@dataclass(frozen=True)
class _Tails:
    reveal: np.ndarray  # log n·Pr[colluding neighbours ≥ t], t = 0..k
    abort: np.ndarray  # log n·Pr[surviving neighbours < t], t = 0..k+1


def _tails(n: int, k: int, colluders: int, survivors: int) -> _Tails:
    log_n = math.log(n)
    return _Tails(
        reveal=_log_upper_tails(hypergeom_log_pmf(n, colluders, k)) + log_n,
        abort=_log_lower_tails(hypergeom_log_pmf(n, survivors, k)) + log_n)


def _smallest(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def _largest(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[-1]) if idx.size else None


def _threshold(n: int, k: int, tails: _Tails, *, log_sec: float, log_cor: float,
               model: ServerModel) -> tuple[int, int] | None:
    """(t, t_hi) for degree k, or ``None``."""
    t1 = _smallest(tails.reveal <= log_sec)
    t_hi = _largest(tails.abort <= log_cor)
    if t1 is None or t_hi is None:
        return None
    t = max(t1, 1)
    if model is ServerModel.MALICIOUS:
        t = max(t, (k + t1) // 2 + 1)
    return (t, t_hi) if t <= min(t_hi, k) else None


def check_assumptions(collusion: float, dropout: float, security: int = 40,
                      correctness: int = 20) -> None:
    """Validate γ, δ, σ and η (γ + δ ≤ 0.9, as in the production finder).

    Raises:
        ConfigurationError: A value out of range.
    """
    if not (0.0 <= collusion < 1.0 and 0.0 <= dropout < 1.0):
        raise ConfigurationError(
            f"`collusion_fraction` and `dropout_rate` must be in [0, 1). Found {collusion} and "
            f"{dropout}.")
    if collusion + dropout > MAX_BAD_FRACTION + 1e-12:
        raise ConfigurationError(
            f"collusion_fraction + dropout_rate = {collusion + dropout:.3g} > "
            f"{MAX_BAD_FRACTION}: too few honest survivors for any sparse graph. Tip: lower "
            "either.")
    for name, value in (("security", security), ("correctness", correctness)):
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 256:
            raise ConfigurationError(f"`{name}` must be an int in [1, 256]. Found {value!r}.")


def _check_inputs(n: int, collusion: float, dropout: float, security: int,
                  correctness: int) -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 2:
        raise ConfigurationError(f"pairwise masking needs at least 2 clients. Found {n!r}.")
    check_assumptions(collusion, dropout, security, correctness)


@functools.lru_cache(maxsize=256)
def find_params(n: int, *, collusion: float = 1 / 3, dropout: float = 0.2,
                security: int = 40, correctness: int = 20,
                model: ServerModel = ServerModel.SEMI_HONEST) -> SecAggParams:
    """The smallest even degree k (and its threshold t) that meets σ and η for n clients.

    Args:
        n: Clients selected in the round.
        collusion: γ, fraction of the n clients that may collude with the server. Defends
            against a server that recruits clients to rebuild an honest client's secrets.
        dropout: δ, fraction of the n clients that may drop. Rounds abort with probability
            ≤ 2^-η while at most ⌊δn⌋ drop.
        security: σ; each of the two privacy events has probability ≤ 2^-(σ+1).
        correctness: η; the round aborts with probability ≤ 2^-η.
        model: The server to size t for (a malicious one needs t > (k + t₁)/2).

    Raises:
        ConfigurationError: Invalid inputs, or no threshold works even for the complete graph.
    """
    _check_inputs(n, collusion, dropout, security, correctness)
    if not isinstance(model, ServerModel):
        raise ConfigurationError(f"`model` must be a ServerModel. Found {model!r}.")
    colluders, dropouts = _count(collusion, n), _count(dropout, n)
    survivors = n - dropouts
    log_sec = -(security + 1) * math.log(2.0)
    log_cor = -correctness * math.log(2.0)

    def build(k: int, t: int, tails: _Tails) -> SecAggParams:
        return SecAggParams(
            n=n, degree=k, threshold=t, collusion=collusion, dropout=dropout,
            security=security, correctness=correctness, model=model,
            p_reveal=float(min(1.0, math.exp(tails.reveal[t]))) if t < len(tails.reveal)
            else 0.0,
            p_split=(0.0 if model is ServerModel.MALICIOUS
                     else split_probability(n, k, colluders + dropouts)),
            p_abort=float(min(1.0, math.exp(tails.abort[t]))))

    for k in range(2, n - 1, 2):
        tails = _tails(n, k, colluders, survivors)
        found = _threshold(n, k, tails, log_sec=log_sec, log_cor=log_cor, model=model)
        if found is None or split_probability(n, k, colluders + dropouts) > math.exp(log_sec):
            continue
        if model is ServerModel.MALICIOUS and k <= colluders + dropouts:
            continue  # a malicious server picks whom to declare dropped after seeing the graph
        return build(k, found[0], tails)
    return complete_params(n, collusion=collusion, dropout=dropout, security=security,
                           correctness=correctness, model=model)


def complete_params(n: int, *, collusion: float = 1 / 3, dropout: float = 0.2,
                    security: int = 40, correctness: int = 20,
                    model: ServerModel = ServerModel.SEMI_HONEST) -> SecAggParams:
    """The complete graph (SecAgg) with the smallest threshold that is private and live.

    Every client neighbours all n − 1 others, so the adversary's counts are exact and nothing
    is left to chance: ``t = ⌊γn⌋ + 1`` (at least 2, so that no single holder learns a secret)
    keeps ⌊γn⌋ colluders below the threshold; a malicious server needs 2t > n + ⌊γn⌋ (each
    honest holder reveals one share of a client, its colluders both); and ``t ≤ n − 1 − ⌊δn⌋``
    leaves t live holders of a dropped client's key. Both failure probabilities are 0.

    Raises:
        ConfigurationError: The two conditions cannot both hold for these n, γ and δ.
    """
    _check_inputs(n, collusion, dropout, security, correctness)
    if not isinstance(model, ServerModel):
        raise ConfigurationError(f"`model` must be a ServerModel. Found {model!r}.")
    colluders, dropouts = _count(collusion, n), _count(dropout, n)
    k = n - 1
    t = max(colluders + 1, 2)
    if model is ServerModel.MALICIOUS:
        t = max(t, (k + 1 + colluders) // 2 + 1)
    t_hi = n - 1 - dropouts
    if t > t_hi:
        raise ConfigurationError(
            f"with {n} clients no threshold tolerates {colluders} colluding and {dropouts} "
            f"dropped clients (γ={collusion:.3g}, δ={dropout:.3g}; a {model.value} server "
            f"needs t ≥ {t}, but only {t_hi} other holders are sure to survive). Tip: select "
            "more clients, or lower collusion_fraction or dropout_rate.")
    return SecAggParams(n=n, degree=k, threshold=t, collusion=collusion, dropout=dropout,
                        security=security, correctness=correctness, model=model,
                        p_reveal=0.0, p_split=0.0, p_abort=0.0)
