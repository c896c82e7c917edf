"""The FedAvg simulator (McMahan et al. 2017): a server role and client roles, bytes between.

One round r:

1. the server role samples participants S_r (Poisson rate q or fixed size k) and checks the
   privacy budgets;
2. it sends each k ∈ S_r the global model θ, the aggregation stages' client configuration and
   the secure sum's first request (one ``round.start`` message);
3. each client trains from θ when the secure sum asks for its input, runs the stages' client
   halves on Δₖ = θₖ − θ (clipping, noise shares) and sends wₖxₖ and wₖ through the secure sum
   (wₖ = nₖ / max nⱼ, or 1 for uniform weights);
4. the server role obtains Σ wₖxₖ and Σ wₖ, runs the stages' server halves (central noise, the
   fixed denominator, adaptive clipping) and applies its optimizer θ ← opt(θ, Δ̄);
5. the new global model is evaluated on the server's test set.

:class:`FedAvg` is the simulator: it builds a :class:`~privfl.core.roles.ServerRole` and one
:class:`~privfl.core.roles.ClientRole` per client and carries their messages with a transport —
in this process, or over worker processes or Ray actors (:class:`Execution`). The roles share no
object; the driver's memory is O(d) whatever the number of clients (clients train only when their
input is asked for, and replies stream into the server's running sum).

Privacy components declare a :class:`~privfl.core.release.ReleasePolicy`: client sampling comes
from the CSPRNG, and the :class:`History` keeps out what their ledgers do not account for
(exact training losses, participant lists).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from torch import nn

from privfl._validation import require_int
from privfl.core.client import ClientUpdate, evaluate
from privfl.core.history import History, RoundRecord
from privfl.core.params import ParamSpec
from privfl.core.release import PrivacyComponent, ReleasePolicy, redact
from privfl.core.roles import PrivateUpdate, ServerRole
from privfl.core.sampling import ClientSampler
from privfl.core.securesum import PlainSecureSum, SecureSum
from privfl.core.server_opt import FedAvgServer, ServerOptimizer
from privfl.core.simulation import (
    ClientFactory,
    Execution,
    ProcessClients,
    RayClients,
    SequentialClients,
)
from privfl.core.spec import ClientId
from privfl.core.stages import FederationInfo
from privfl.core.transport import InMemoryTransport
from privfl.core.weighting import Weighting, client_weights
from privfl.data.dataset import FederatedDataset
from privfl.errors import (
    BudgetExceededError,
    ConfigurationError,
    ProtocolAbortError,
)

__all__ = ["Evaluator", "Execution", "FedAvg", "FedAvgConfig", "FederationInfo"]


@dataclass(frozen=True, slots=True, kw_only=True)
class FedAvgConfig:
    """Run-level settings of the driver.

    Attributes:
        rounds: Number of rounds R ≥ 1.
        sampler: Client sampling scheme.
        weighting: Weight clients by their number of examples or uniformly.
        seed: Seed of the simulation randomness (sampling when no privacy layer asks for the
            CSPRNG, and local batch order, mixed with each client's id and the round).
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


def _default_workers() -> int:
    from privfl.he.parallel import default_workers

    return default_workers()


@dataclass
class FedAvg:
    """Simulates federated training of ``model`` over ``data`` with two roles.

    Attributes:
        model: The model architecture; its current weights are the initial global model. The
            server evaluates with it; every client trains its own copy.
        data: Per-client training sets and the server's test set.
        client_update: What a client does each round (clients get a copy without server-side
            references).
        config: Rounds, sampling, weighting, seed.
        server_optimizer: Applied to the averaged delta (default: FedAvg with η = 1).
        secure_sum: How values are summed (default: plain).
        transport: Carries the messages (default: in-memory, no dropouts).
        stages: Aggregation stages or stage groups, outermost first (clipping, central or
            distributed noise, coordinate clipping for bounded sums).
        execution: Where the simulated clients run.
        workers: Worker processes or actors for parallel execution (0: one per core).
    """

    model: nn.Module
    data: FederatedDataset
    client_update: ClientUpdate
    config: FedAvgConfig
    server_optimizer: ServerOptimizer = field(default_factory=FedAvgServer)
    secure_sum: SecureSum = field(default_factory=PlainSecureSum)
    transport: InMemoryTransport = field(default_factory=InMemoryTransport)
    stages: Any = None
    execution: Execution = Execution.SEQUENTIAL
    workers: int = 0

    def __post_init__(self) -> None:
        self.spec = ParamSpec.from_module(self.model)
        n = self.data.num_clients
        sizes = [len(c) for c in self.data.clients]
        update = self.client_update
        policy = update.release_policy() if isinstance(update, PrivacyComponent) \
            else ReleasePolicy()
        private = isinstance(update, PrivateUpdate) and update.ledger is not None
        self.server = ServerRole(
            param_spec=self.spec, params=self.spec.to_vector(self.model.state_dict()),
            sampler=self.config.sampler, num_clients=n, rounds=self.config.rounds,
            server_optimizer=self.server_optimizer, stages=list(_as_list(self.stages)),
            weights=client_weights(sizes, self.config.weighting),
            weighting=self.config.weighting, weight_cap=float(max(sizes)),
            seed=self.config.seed, secure_sampling=self.config.secure_sampling,
            example_ledger=update.ledger if private else None,  # type: ignore[attr-defined]
            example_guard=update if private else None, policy=policy,
            evaluate=Evaluator(self.spec, self.model, self.data.test))
        self.value_spec = self.server.configure(self.secure_sum)
        self.release_policy = self.server.policy
        self._clients: Any = None
        self.abandoned: tuple[int, dict[str, Any] | None] | None = None
        """Set when a round is interrupted: its id and the ledgers at that moment."""

    # --- the client side ---------------------------------------------------------------------
    def _factory(self, exported: bool) -> ClientFactory:
        update = self.client_update
        client_side = update.client_copy() if hasattr(update, "client_copy") else update
        template = update.ledger if isinstance(update, PrivateUpdate) else None
        provisioner = getattr(self.secure_sum, "client_secrets", None)
        keys = provisioner() if provisioner is not None else None
        factory = ClientFactory(data=self.data, model=self.model, client_update=client_side,
                                ledger_template=template, seed=self.config.seed)
        if keys is not None:
            if exported and not hasattr(keys, "export_secret"):
                raise ConfigurationError(
                    f"the clients' secrets ({type(keys).__name__}) are provisioned in this "
                    "process and are not shipped to worker processes: run with "
                    "Execution.SEQUENTIAL, or provision each node out of band.")
            if exported:
                factory.exported_secrets = (
                    keys.params, keys.export_secret(i_understand_this_reveals_the_key=True))
            else:
                factory.secrets_object = keys
        return factory

    def client_pool(self) -> Any:
        """The simulated clients (started on first use; :meth:`close` stops them)."""
        if self._clients is None:
            ids = list(range(self.data.num_clients))
            mode = self.execution
            if mode is Execution.AUTO:
                try:
                    import ray  # noqa: F401
                except ImportError:
                    mode = Execution.PROCESSES
                else:
                    mode = Execution.RAY
            workers = self.workers or _default_workers()
            if mode is Execution.SEQUENTIAL:
                self._clients = SequentialClients(self._factory(exported=False), ids)
            elif mode is Execution.PROCESSES:
                self._clients = ProcessClients(self._factory(exported=True), ids, workers)
            else:
                self._clients = RayClients(self._factory(exported=True), ids, workers)
        return self._clients

    def close(self) -> None:
        """Stop worker processes or actors (a sequential run has none)."""
        if self._clients is not None:
            self._clients.close()
            self._clients = None

    # --- the run --------------------------------------------------------------------------------
    @property
    def params(self) -> npt.NDArray[np.float32]:
        """The current global model (the server role's)."""
        return self.server.params

    def _evaluate_params(self, params: npt.NDArray[np.float32]) -> tuple[float, float]:
        if self.server.evaluate is None:
            return float("nan"), float("nan")
        return self.server.evaluate(params)

    # --- checkpoints ----------------------------------------------------------------------------
    def ledgers(self) -> list[Any]:
        """Every privacy ledger of the server side, each once, in a fixed order."""
        found: list[Any] = []
        for ledger in [self.server.example_ledger,
                       *(getattr(s, "ledger", None) for s in self.server.chain.stages)]:
            if ledger is not None and all(ledger is not f for f in found):
                found.append(ledger)
        return found

    def state_dict(self, *, ledgers_only: bool = False) -> dict[str, Any]:
        """The run's state between rounds, both roles' (see :mod:`privfl.core.checkpoint`).

        ``server``: model, sampling generator, optimizer, stages; ``ledgers``: the server's
        privacy ledgers; ``clients``: each client's last round and own ledger, collected from
        wherever the client roles run; ``transport``: the dropout generator. No secret is
        included. ``ledgers_only`` returns only ``ledgers`` and ``clients`` (what an abandoned
        round may have charged).
        """
        pool = self.client_pool()
        out: dict[str, Any] = {
            "ledgers": [ledger.state_dict() for ledger in self.ledgers()],
            "clients": {str(c): st for c, st in pool.client_states().items()}}
        if not ledgers_only:
            out["server"] = self.server.state_dict()
            out["transport"] = self.transport.state_dict()
        return out

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a driver built from the same configuration.

        Raises:
            CheckpointError: The state does not belong to a run of this configuration.
        """
        from privfl.core.checkpoint import require
        from privfl.errors import CheckpointError

        ledgers = self.ledgers()
        saved = require(state, "ledgers", list)
        if len(saved) != len(ledgers):
            raise CheckpointError(f"the checkpoint has {len(saved)} privacy ledgers; this run "
                                  f"keeps {len(ledgers)}")
        clients = require(state, "clients", dict)
        try:
            states = {int(k): v for k, v in clients.items()}
        except ValueError as exc:
            raise CheckpointError(f"bad client id in the checkpoint: {exc}") from exc
        self.server.load_state_dict(require(state, "server", dict))
        self.transport.load_state_dict(require(state, "transport", dict))
        for ledger, st in zip(ledgers, saved, strict=True):
            ledger.load_state_dict(st)
        self.client_pool().load_client_states(states)

    def new_history(self) -> History:
        """An empty history with the initial model's test metrics."""
        history = History(withheld=[w.reason for w in sorted(self.release_policy.withheld,
                                                             key=lambda w: w.value)])
        history.initial_loss, history.initial_accuracy = self._evaluate_params(self.params)
        return history

    def _charges_so_far(self) -> dict[str, Any] | None:
        """The ledgers now, in the middle of an abandoned round (``None`` if unreachable).

        Clients that trained before the interruption have charged their ledgers; a resumed
        run must keep those charges. Worker processes or actors may be mid-exchange, so only
        in-process clients are read.
        """
        if not isinstance(self._clients, SequentialClients):
            return None
        try:
            return self.state_dict(ledgers_only=True)
        except Exception:  # an interrupted round may have left anything behind
            return None

    def run(self, *, on_round: Callable[[RoundRecord], None] | None = None,
            history: History | None = None, stop: Callable[[], bool] | None = None) -> History:
        """Run the rounds and return the :class:`History`.

        A round whose secure sum aborts (too few survivors) leaves the model unchanged and is
        recorded with the reason; a :class:`~privfl.errors.BudgetExceededError` from a stage
        or a client budget stops the run cleanly, recorded in ``History.stopped_early``.

        Args:
            on_round: Called with each round's record once the round is complete.
            history: The history of a resumed run (its state restored with
                :meth:`load_state_dict`): rounds continue after its last one.
            stop: Asked after each round; ``True`` ends the run there (an interruption: the
                history then has fewer rounds than planned and no ``stopped_early``).
        """
        if history is None:
            history = self.new_history()
        first = history.rounds[-1].round_id + 1 if history.rounds else 1
        try:
            for r in range(first, self.config.rounds + 1):
                if stop is not None and stop():
                    break
                selected = self.server.sample(r)
                try:
                    self.server.guard(r, selected)
                except BudgetExceededError as exc:
                    history.stopped_early = f"before round {r}: {exc}"
                    break
                try:
                    record = self.run_round(r, selected)
                except KeyboardInterrupt:
                    self.abandoned = (r, self._charges_so_far())
                    raise
                history.append(record)
                if on_round is not None:
                    on_round(record)
        finally:
            self.close()
        return history

    def run_round(self, round_id: int, selected: list[ClientId]) -> RoundRecord:
        """One round over ``selected``; returns its record (the model is updated in place).

        The record is redacted as the release policy demands before it is returned.
        """
        t0 = time.perf_counter()
        record = RoundRecord(round_id=round_id, selected=list(selected))
        needed = self.value_spec.min_clients
        if len(selected) < needed:
            released = not selected and self.server.close_round(round_id, None, record)
            if not released:
                record.aborted = ("no client was sampled" if not selected else
                                  f"{len(selected)} clients were sampled; the sum is released "
                                  f"only with at least {needed}")
        else:
            self._exchange(record, round_id, selected)
        record.seconds["exchange"] = time.perf_counter() - t0
        self._evaluate(record, round_id, t0)
        redact(record, self.release_policy)
        return record

    def _exchange(self, record: RoundRecord, round_id: int, selected: list[ClientId]) -> None:
        server_round = self.server.open_round(round_id, selected)
        try:
            outcome = self.transport.run(server_round, self.client_pool())
        except ProtocolAbortError as exc:
            record.aborted = str(exc)
            record.dropped = {c: "round aborted" for c in selected}
            return
        record.dropped = dict(outcome.dropped)
        record.contributors = list(outcome.result.contributors)
        record.bytes_up, record.bytes_down = outcome.bytes_up, outcome.bytes_down
        if server_round.losses:
            record.train_loss = float(np.mean(server_round.losses))
        if not self.server.close_round(round_id, outcome.result, record):
            record.aborted = "the aggregation released nothing this round"

    def _evaluate(self, record: RoundRecord, round_id: int, t0: float) -> None:
        t = time.perf_counter()
        last = round_id == self.config.rounds
        if round_id % self.config.eval_every == 0 or last:
            record.test_loss, record.test_accuracy = self._evaluate_params(self.params)
        record.seconds["evaluate"] = time.perf_counter() - t
        record.seconds["total"] = time.perf_counter() - t0


@dataclass
class Evaluator:
    """The server's evaluation: its model instance and its test set (server side only)."""

    spec: ParamSpec
    model: nn.Module
    test: Any

    def __call__(self, params: npt.NDArray[np.float32]) -> tuple[float, float]:
        """Loss and accuracy of ``params`` on the test set."""
        self.spec.load_into(self.model, params)
        return evaluate(self.model, self.test)


def _as_list(stages: Any) -> list[Any]:
    if stages is None:
        return []
    if isinstance(stages, (list, tuple)):
        return list(stages)
    return [stages]
