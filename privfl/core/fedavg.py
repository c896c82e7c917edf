"""The FedAvg driver (McMahan et al. 2017): pluggable client updates, secure sums, optimizers.

One round r:

1. sample participants S_r (Poisson rate q or fixed size k, seeded);
2. each k ∈ S_r trains from θ and produces Δₖ = θₖ − θ (:class:`~privfl.core.client.ClientUpdate`);
3. each sends wₖΔₖ and wₖ through the secure sum (wₖ = nₖ / max nⱼ, or 1 for uniform weights);
4. the server obtains Σ wₖΔₖ and Σ wₖ over the survivors, forms Δ̄ = Σ wₖΔₖ / Σ wₖ and applies
   its optimizer θ ← opt(θ, Δ̄);
5. the new global model is evaluated on the test set.

The driver knows nothing of the privacy layers: they plug in as a client update (DP-SGD), as a
secure sum, or as :class:`RoundHooks` around the aggregation (clipping, central noise, budgets).
Privacy components also declare a :class:`~privfl.core.release.ReleasePolicy`: the driver then
draws client sampling from the CSPRNG and keeps out of the :class:`History` what their ledgers
do not account for (exact training losses, participant lists).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
from torch import nn

from privfl._csprng import RandomSource, SecureRandom
from privfl._validation import require_int
from privfl.core.client import ClientResult, ClientUpdate, evaluate
from privfl.core.history import History, RoundRecord
from privfl.core.params import ParamSpec
from privfl.core.release import merge_policies, redact
from privfl.core.sampling import ClientSampler
from privfl.core.securesum import PlainSecureSum, SecureSum
from privfl.core.server_opt import FedAvgServer, ServerOptimizer
from privfl.core.spec import ClientId, Contribution, SumResult, ValueSpec
from privfl.core.transport import InMemoryTransport
from privfl.core.weighting import Weighting, client_weights
from privfl.data.dataset import FederatedDataset
from privfl.errors import ProtocolAbortError

__all__ = ["FedAvg", "FedAvgConfig", "FederationInfo", "RoundGuard", "RoundHooks"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAvgConfig:
    """Run-level settings of the driver.

    Attributes:
        rounds: Number of rounds R ≥ 1.
        sampler: Client sampling scheme.
        weighting: Weight clients by their number of examples or uniformly.
        seed: Seed of the simulation randomness (sampling, batch order).
        eval_every: Evaluate the global model every this many rounds (and after the last).
        secure_sampling: Draw client sampling from the OS-seeded CSPRNG even when no privacy
            component asks for it (client-level DP asks: a sample replayable from ``seed``
            voids amplification by sampling).
    """

    rounds: int
    sampler: ClientSampler
    weighting: Weighting = Weighting.EXAMPLES
    seed: int = 0
    eval_every: int = 1
    secure_sampling: bool = False

    def __post_init__(self) -> None:
        require_int("rounds", self.rounds, minimum=1)
        require_int("seed", self.seed, minimum=0)
        require_int("eval_every", self.eval_every, minimum=1)


@dataclass(frozen=True, slots=True)
class FederationInfo:
    """What the aggregation hooks may know about the federation (all public to the server).

    Attributes:
        num_clients: Population size N.
        weights: Each client's weight wₖ ∈ (0, 1].
        sampler: The client sampling scheme.
        rounds: Planned number of rounds.
    """

    num_clients: int
    weights: npt.NDArray[np.float64]
    sampler: ClientSampler
    rounds: int


@runtime_checkable
class RoundGuard(Protocol):
    """Anything that may veto a round before it runs (privacy budgets)."""

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Raise :class:`~privfl.errors.BudgetExceededError` to stop before ``round_id``."""
        ...


class RoundHooks(RoundGuard, Protocol):
    """Extension points around aggregation (used by the DP layer)."""

    def setup(self, spec: ValueSpec, info: FederationInfo) -> ValueSpec:
        """Return the spec handed to the secure sum (for example with the clip bound set)."""
        ...

    def client_value(self, round_id: int, client: ClientId,
                     delta: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Transform a client's delta before the secure sum (for example clipping)."""
        ...

    def after_sum(self, round_id: int, result: SumResult,
                  record: RoundRecord) -> npt.NDArray[np.float64] | None:
        """Turn the secure-sum result into the averaged delta (for example add noise).

        Called with an empty result (no contributors) for a round in which no client was
        sampled, so that a DP release still happens as the accounting assumes; a hook that
        has nothing to release then returns ``None`` and the model stays unchanged.
        """
        ...


@dataclass
class FedAvg:
    """Simulates federated training of ``model`` over ``data``.

    Attributes:
        model: The model architecture; its current weights are the initial global model. The
            same object is reused for every client's local training.
        data: Per-client training sets and the server's test set.
        client_update: What a client does each round.
        config: Rounds, sampling, weighting, seed.
        server_optimizer: Applied to the averaged delta (default: FedAvg with η = 1).
        secure_sum: How deltas are summed (default: plain).
        transport: Carries secure-sum messages (default: in-memory, no dropouts).
        hooks: Optional privacy hooks around the aggregation.
    """

    model: nn.Module
    data: FederatedDataset
    client_update: ClientUpdate
    config: FedAvgConfig
    server_optimizer: ServerOptimizer = field(default_factory=FedAvgServer)
    secure_sum: SecureSum = field(default_factory=PlainSecureSum)
    transport: InMemoryTransport = field(default_factory=InMemoryTransport)
    hooks: RoundHooks | None = None

    def __post_init__(self) -> None:
        self.spec = ParamSpec.from_module(self.model)
        self.params: npt.NDArray[np.float32] = self.spec.to_vector(self.model.state_dict())
        n = self.data.num_clients
        self._weights = client_weights([len(c) for c in self.data.clients],
                                       self.config.weighting)
        vspec = ValueSpec(length=self.spec.dim, max_clients=self.config.sampler.max_clients(n),
                          max_weight=1.0)
        if self.hooks is not None:
            info = FederationInfo(num_clients=n, weights=self._weights,
                                  sampler=self.config.sampler, rounds=self.config.rounds)
            vspec = self.hooks.setup(vspec, info)
        self.value_spec = vspec
        self._process = self.secure_sum.create(vspec)
        self._rng = np.random.default_rng(self.config.seed)
        self.release_policy = merge_policies([self.hooks, self.client_update])
        secure = self.release_policy.secure_sampling or self.config.secure_sampling
        self._sampling_rng: RandomSource = SecureRandom() if secure else self._rng

    def run(self, *, on_round: Callable[[RoundRecord], None] | None = None) -> History:
        """Run all rounds and return the :class:`History`.

        A round whose secure sum aborts (too few survivors) leaves the model unchanged and is
        recorded with the reason; a :class:`~privfl.errors.BudgetExceededError` from the hooks
        stops the run cleanly, recorded in ``History.stopped_early``.
        """
        from privfl.errors import BudgetExceededError

        history = History(withheld=[w.reason for w in sorted(self.release_policy.withheld,
                                                             key=lambda w: w.value)])
        self.spec.load_into(self.model, self.params)
        history.initial_loss, history.initial_accuracy = evaluate(self.model, self.data.test)
        population = list(range(self.data.num_clients))
        for r in range(1, self.config.rounds + 1):
            selected = self.config.sampler.sample(population, self._sampling_rng)
            try:
                for guard in (self.hooks, self.client_update):
                    if isinstance(guard, RoundGuard):
                        guard.before_round(r, selected)
            except BudgetExceededError as exc:
                history.stopped_early = f"before round {r}: {exc}"
                break
            record = self.run_round(r, selected)
            history.append(record)
            if on_round is not None:
                on_round(record)
        return history

    def run_round(self, round_id: int, selected: list[ClientId]) -> RoundRecord:
        """One round over ``selected``; returns its record (the model is updated in place).

        The record is redacted as the release policy demands before it is returned.
        """
        t0 = time.perf_counter()
        record = RoundRecord(round_id=round_id, selected=list(selected))
        self._round(record, round_id, selected, t0)
        self._evaluate(record, round_id, t0)
        redact(record, self.release_policy)
        return record

    def _round(self, record: RoundRecord, round_id: int, selected: list[ClientId],
               t0: float) -> None:
        needed = self.value_spec.min_clients
        if len(selected) < needed:
            avg = None
            if not selected and self.hooks is not None:  # a DP release despite an empty sample
                empty = SumResult(weighted_sum=np.zeros(self.value_spec.length),
                                  total_weight=0.0, contributors=())
                avg = self.hooks.after_sum(round_id, empty, record)
            if avg is None:
                record.aborted = ("no client was sampled" if not selected else
                                  f"{len(selected)} clients were sampled; the sum is released "
                                  f"only with at least {needed}")
            else:
                self.params = self.server_optimizer.step(self.params, avg)
            return
        results = {c: self._train_client(c, round_id) for c in selected}
        losses = [res.train_loss for res in results.values() if math.isfinite(res.train_loss)]
        record.train_loss = float(np.mean(losses)) if losses else math.nan
        t1 = time.perf_counter()
        contributions = self._contributions(round_id, results)
        server = self._process.new_round(round_id, selected)
        sessions = {c: self._process.client_session(c) for c in selected}
        try:
            outcome = self.transport.run_round(server, sessions, contributions)
        except ProtocolAbortError as exc:
            record.aborted = str(exc)
            record.dropped = {c: "round aborted" for c in selected}
        else:
            record.dropped = dict(outcome.dropped)
            record.contributors = list(outcome.result.contributors)
            record.bytes_up, record.bytes_down = outcome.bytes_up, outcome.bytes_down
            record.bytes_down += 4 * self.spec.dim * len(selected)  # model broadcast
            avg = (outcome.result.mean() if self.hooks is None
                   else self.hooks.after_sum(round_id, outcome.result, record))
            if avg is None:
                record.aborted = "the aggregation released nothing this round"
            else:
                self.params = self.server_optimizer.step(self.params, avg)
        record.seconds["train"] = t1 - t0
        record.seconds["aggregate"] = time.perf_counter() - t1

    def _train_client(self, client: ClientId, round_id: int) -> ClientResult:
        return self.client_update.train(self.model, self.spec, self.params,
                                        self.data.clients[client], self._rng, client, round_id)

    def _contributions(self, round_id: int,
                       results: Mapping[ClientId, ClientResult]) -> dict[ClientId, Contribution]:
        out = {}
        for c, res in results.items():
            delta = res.delta
            if self.hooks is not None and np.isfinite(delta).all():
                delta = self.hooks.client_value(round_id, c, delta)
            out[c] = Contribution(delta, float(self._weights[c]))
        return out

    def _evaluate(self, record: RoundRecord, round_id: int, t0: float) -> None:
        t = time.perf_counter()
        last = round_id == self.config.rounds
        if round_id % self.config.eval_every == 0 or last:
            self.spec.load_into(self.model, self.params)
            record.test_loss, record.test_accuracy = evaluate(self.model, self.data.test)
        record.seconds["evaluate"] = time.perf_counter() - t
        record.seconds["total"] = time.perf_counter() - t0
