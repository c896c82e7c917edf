"""Client sampling: Poisson with rate q, or a fixed number without replacement.

The sampling scheme matters for privacy accounting: client-level DP analyses (DP-FedAvg,
McMahan et al. 2018) assume each client is included independently with probability q
(:class:`PoissonSampling`). :class:`FixedSizeSampling` draws exactly k of the n clients
uniformly without replacement; its inclusion probability is k/n.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from privfl._csprng import RandomSource
from privfl._validation import require_int, require_probability
from privfl.core.spec import ClientId
from privfl.errors import ConfigurationError

__all__ = ["ClientSampler", "FixedSizeSampling", "PoissonSampling"]


class ClientSampler(Protocol):
    """Chooses the participants of a round."""

    def sample(self, population: Sequence[ClientId], rng: RandomSource) -> list[ClientId]:
        """Return the sorted list of clients selected for one round."""
        ...

    def inclusion_probability(self, population_size: int) -> float:
        """Probability that a given client takes part in a round."""
        ...

    def max_clients(self, population_size: int) -> int:
        """Largest possible number of participants in a round."""
        ...


@dataclass(frozen=True, slots=True)
class PoissonSampling:
    """Each client is selected independently with probability ``sample_rate`` (may be empty)."""

    sample_rate: float

    def __post_init__(self) -> None:
        require_probability("sample_rate", self.sample_rate)

    def sample(self, population: Sequence[ClientId], rng: RandomSource) -> list[ClientId]:
        """Bernoulli(q) per client."""
        mask = rng.random(len(population)) < self.sample_rate
        return sorted(c for c, m in zip(population, mask, strict=True) if m)

    def inclusion_probability(self, population_size: int) -> float:
        """Q."""
        return self.sample_rate

    def max_clients(self, population_size: int) -> int:
        """All of them, in the worst case."""
        return population_size


@dataclass(frozen=True, slots=True)
class FixedSizeSampling:
    """Exactly ``clients_per_round`` clients, uniformly without replacement."""

    clients_per_round: int

    def __post_init__(self) -> None:
        require_int("clients_per_round", self.clients_per_round, minimum=1)

    def _check(self, n: int) -> None:
        if self.clients_per_round > n:
            raise ConfigurationError(
                f"`clients_per_round` must be <= the number of clients ({n}). "
                f"Found {self.clients_per_round}.")

    def sample(self, population: Sequence[ClientId], rng: RandomSource) -> list[ClientId]:
        """K distinct clients."""
        self._check(len(population))
        idx = rng.choice(len(population), size=self.clients_per_round, replace=False)
        return sorted(population[int(i)] for i in idx)

    def inclusion_probability(self, population_size: int) -> float:
        """K / n."""
        self._check(population_size)
        return self.clients_per_round / population_size

    def max_clients(self, population_size: int) -> int:
        """K."""
        return self.clients_per_round
