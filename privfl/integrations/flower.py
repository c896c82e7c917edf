"""privfl inside Flower 1.41: the server role as a ``Strategy``, the client role as a ``ClientApp``.

Flower's Message API carries privfl's wire bytes in ``Message``s.

Server::

    strategy = PrivflStrategy(model=model, secure_sum=PairwiseSecureSum(sparse=True),
                              privacy=local_dp_sgd(...), evaluate=...)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()),
                            num_rounds=5)

Client::

    app = privfl_client_app(lambda context: ClientSetup(client_id=..., data=..., model=...,
                                                        client_update=...))

What happens. ``start()`` first asks every node for the privfl client id it declares
(``query.privfl_hello``; ids must be distinct and below 2³²), then runs each round as privfl's
server role: it samples, checks the budgets, and drives the secure sum's stage machine, each
exchange one ``send_and_receive`` of ``query.privfl`` messages whose ``ConfigRecord`` carries the
privfl bytes. The reply's sender is Flower's ``src_node_id``, never a claim inside the content. A
node that answers with an error, does not answer in time, answers twice, sends missing or
mistyped records or bytes the protocol rejects is excluded from the round as the protocol allows
(the reason is in the round's record); a round the secure sum cannot complete is recorded as
aborted; configuration errors (a secure sum that cannot hold the model) are raised before the
first round. The ``Result`` holds the final model, and per round the test metrics and ε; the
privfl :class:`~privfl.core.history.History` and
:class:`~privfl.accounting.report.PrivacyReport` are on the strategy after ``start``.

The ``ClientApp`` keeps the client role's state between messages in ``Context.state`` (Flower's
deployment starts a fresh process for every message): the round's protocol state, secrets
included, and the client's own example-level ledger. That store stays on the client's node.
Only Flower's public modules are used (``flwr.app``, ``flwr.serverapp``, ``flwr.clientapp``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Result, Strategy

from privfl.core.history import History, RoundRecord
from privfl.core.params import ParamSpec
from privfl.core.release import PrivacyComponent, ReleasePolicy, redact
from privfl.core.roles import ClientRole, PrivateUpdate, ServerRole, Trainer
from privfl.core.sampling import FixedSizeSampling
from privfl.core.securesum import PlainSecureSum
from privfl.core.server_opt import FedAvgServer
from privfl.core.spec import MAX_CLIENT_ID, ClientId
from privfl.core.transport import InMemoryTransport, Reply
from privfl.core.weighting import Weighting
from privfl.errors import (
    BudgetExceededError,
    ClientRefusedError,
    ConfigurationError,
    MalformedMessageError,
    ProtocolAbortError,
    ProtocolViolationError,
)

__all__ = ["HELLO_TYPE", "MESSAGE_TYPE", "ClientSetup", "FlowerClients", "PrivflStrategy",
           "privfl_client_app"]

MESSAGE_TYPE = "query.privfl"
HELLO_TYPE = "query.privfl_hello"
_RECORD = "privfl"


# --- the client side ---------------------------------------------------------------------------
@dataclass
class ClientSetup:
    """What a Flower node brings to privfl.

    Attributes:
        client_id: The privfl client id this node declares (distinct, < 2³²).
        data: Its training examples (an :class:`~privfl.data.dataset.ArrayDataset`).
        model: The model architecture (the server sends the weights).
        client_update: What it does each round (``LocalSGD``, ``DPSGDClientUpdate``…).
        secrets: Provisioned secrets of the secure sum (``ClientKeys`` for CKKS), if any.
        ledger: Settings of its own example-level ledger under local DP (δ, accountant,
            budget); ``None`` takes the client update's.
        seed: Simulation seed of local randomness, or ``None`` for fresh randomness.
    """

    client_id: int
    data: Any
    model: Any
    client_update: Any
    secrets: object | None = None
    ledger: Any = None
    seed: int | None = None


_SETUPS: dict[tuple[int, int], tuple[ClientSetup, Trainer]] = {}


def _setup(make: Callable[[Context], ClientSetup], context: Context
           ) -> tuple[ClientSetup, Trainer]:
    key = (int(context.run_id), int(context.node_id))
    hit = _SETUPS.get(key)
    if hit is None:
        setup = make(context)
        if not 0 <= int(setup.client_id) <= MAX_CLIENT_ID:
            raise ConfigurationError(f"client ids must be in [0, 2**32). Found {setup.client_id}.")
        update = setup.client_update
        client_side = update.client_copy() if hasattr(update, "client_copy") else update
        trainer = Trainer(setup.model, ParamSpec.from_module(setup.model), client_side)
        hit = _SETUPS[key] = (setup, trainer)
    return hit


def _role(setup: ClientSetup, trainer: Trainer) -> ClientRole:
    template = setup.ledger if setup.ledger is not None else getattr(
        setup.client_update, "ledger", None)
    return ClientRole(setup.client_id, setup.data, trainer, secrets=setup.secrets,
                      ledger=template.empty_like() if template is not None else None,
                      seed=setup.seed)


def _field(msg: Message, name: str, kind: type) -> Any:
    if not msg.has_content() or _RECORD not in msg.content:
        raise MalformedMessageError(f"message without a `{_RECORD}` record")
    record = msg.content[_RECORD]
    if not isinstance(record, ConfigRecord) or name not in record:
        raise MalformedMessageError(f"`{_RECORD}` record without `{name}`")
    value = record[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedMessageError(f"`{_RECORD}.{name}` is not {kind.__name__}")
    return value


def privfl_client_app(make: Callable[[Context], ClientSetup], *,
                      mods: Sequence[Any] = ()) -> ClientApp:
    """A ``ClientApp`` that runs privfl's client role for the node ``make`` describes.

    ``make(context)`` is called once per node and run (in simulation a process serves several
    nodes; in deployment every message is a fresh process) and returns the node's
    :class:`ClientSetup`. Errors the protocol defines (refusals, rejected requests) become
    Flower error replies, which the strategy records as the node's exclusion. ``mods`` are
    Flower mods applied to every message (for example ``message_size_mod``).
    """
    app = ClientApp(mods=list(mods))

    @app.query("privfl_hello")
    def hello(msg: Message, context: Context) -> Message:
        """A strategy starts: declare the client id; forget the previous run's rounds."""
        setup, trainer = _setup(make, context)
        stored = context.state.get(_RECORD)
        if isinstance(stored, ConfigRecord) and "state" in stored:
            role = _role(setup, trainer)
            role.restore_state(bytes(stored["state"]))  # type: ignore[arg-type]
            role.new_run()  # rounds restart at 1; the privacy spent stays in the ledger
            context.state[_RECORD] = ConfigRecord({"state": role.export_state()})
        return Message(RecordDict({_RECORD: ConfigRecord({"client": int(setup.client_id)})}),
                       reply_to=msg)

    @app.query("privfl")
    def exchange(msg: Message, context: Context) -> Message:
        setup, trainer = _setup(make, context)
        data = _field(msg, "message", bytes)
        if _field(msg, "client", int) != setup.client_id:
            raise ProtocolViolationError(
                f"the server addressed another client id; this node is client {setup.client_id}")
        role = _role(setup, trainer)
        stored = context.state.get(_RECORD)
        if isinstance(stored, ConfigRecord) and "state" in stored:
            role.restore_state(bytes(stored["state"]))  # type: ignore[arg-type]
        reply = role.handle(data)
        context.state[_RECORD] = ConfigRecord({"state": role.export_state()})
        return Message(RecordDict({_RECORD: ConfigRecord({"message": reply})}), reply_to=msg)

    return app


# --- the server side ---------------------------------------------------------------------------
class FlowerClients:
    """A privfl client pool over a Flower ``Grid``: one ``send_and_receive`` per exchange."""

    def __init__(self, grid: Grid, node_of: dict[ClientId, int], round_id: int,
                 timeout: float) -> None:
        self.grid = grid
        self.node_of = node_of
        self.round_id = round_id
        self.timeout = timeout
        self.violations: dict[ClientId, str] = {}

    def exchange(self, requests: Sequence[tuple[ClientId, bytes]]) -> Iterator[Reply]:
        """Send every request as a Message; yield replies (or why not) in request order."""
        msgs = [Message(RecordDict({_RECORD: ConfigRecord({"message": req, "client": c})}),
                        dst_node_id=self.node_of[c], message_type=MESSAGE_TYPE,
                        group_id=str(self.round_id)) for c, req in requests]
        client_of = {self.node_of[c]: c for c, _ in requests}
        replies: dict[ClientId, Message] = {}
        doubled: set[ClientId] = set()
        rep: Message | None
        for rep in self.grid.send_and_receive(msgs, timeout=self.timeout):
            c = client_of.get(int(rep.metadata.src_node_id))
            if c is None:
                continue  # not a node of this exchange: ignored
            if c in replies:
                doubled.add(c)
            replies[c] = rep
        for c, _ in requests:
            rep = replies.get(c)
            if c in doubled:
                yield c, ProtocolViolationError(f"node {self.node_of[c]} answered twice")
            elif rep is None:
                yield c, ClientRefusedError(f"no reply within {self.timeout:g} s")
            elif rep.has_error():
                yield c, ClientRefusedError(
                    f"node error {rep.error.code}: {rep.error.reason}")
            else:
                try:
                    yield c, _field(rep, "message", bytes)
                except MalformedMessageError as exc:
                    yield c, exc


class PrivflStrategy(Strategy):
    """A Flower ``Strategy`` whose ``start()`` runs privfl's server role over Flower messages.

    Args:
        model: The model architecture (layout and, unless ``initial_arrays`` are given, the
            initial weights).
        secure_sum: Any privfl secure sum (plain, CKKS — with ``server_context=`` in a
            deployment —, SecAgg, SecAgg+, multi-server).
        privacy: A :class:`~privfl.recipes.DPPlan` (its stages and ledger run here; its client
            update is only read for the budget guard and the report) or ``None``.
        stages: Further aggregation stages, outside the plan's (``CoordinateClip`` for bounded
            sums without client-level DP).
        server_optimizer: Default FedAvg with η = 1.
        sampler: Default: every node each round.
        weighting: Uniform by default; ``EXAMPLES`` needs ``example_cap``.
        example_cap: The public example count that maps to weight 1.
        evaluate: ``params -> (loss, accuracy)`` on the server's test data, or ``None``.
        min_nodes: Wait for this many nodes before the first round.
        exchange_timeout: Seconds to wait for the replies of one exchange (a node that misses
            it is excluded from the round).
        seed: Seed of sampling (when no privacy layer needs the CSPRNG) and of nothing else.
    """

    def __init__(self, *, model: Any, secure_sum: Any = None, privacy: Any = None,
                 stages: Any = None, server_optimizer: Any = None, sampler: Any = None,
                 weighting: Weighting = Weighting.UNIFORM, example_cap: float | None = None,
                 evaluate: Callable[[npt.NDArray[np.float32]], tuple[float, float]] | None = None,
                 min_nodes: int = 2, exchange_timeout: float = 120.0, seed: int = 0) -> None:
        if weighting is Weighting.EXAMPLES and not (example_cap and example_cap > 0):
            raise ConfigurationError("example weighting over Flower needs `example_cap`, the "
                                     "public example count that maps to weight 1.")
        self.model = model
        self.param_spec = ParamSpec.from_module(model)
        self.secure_sum = secure_sum if secure_sum is not None else PlainSecureSum()
        self.privacy = privacy
        self.stages = stages
        self.server_optimizer = server_optimizer or FedAvgServer()
        self.sampler = sampler
        self.weighting = weighting
        self.example_cap = float(example_cap or 1.0)
        self.evaluate = evaluate
        self.min_nodes = min_nodes
        self.exchange_timeout = exchange_timeout
        self.seed = seed
        self.history: History | None = None
        self.report: Any = None
        self.node_of: dict[ClientId, int] = {}

    # Flower's abstract one-exchange hooks: privfl drives the round itself in start().
    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        """Not used: ``start()`` runs privfl's protocol."""
        return []

    def aggregate_train(self, server_round: int, replies: Any) -> tuple[Any, Any]:
        """Not used: ``start()`` runs privfl's protocol."""
        return None, None

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> list[Message]:
        """Not used: evaluation is the server's (``evaluate=``)."""
        return []

    def aggregate_evaluate(self, server_round: int, replies: Any) -> Any:
        """Not used."""
        return None

    def summary(self) -> None:
        """Nothing to print: see :attr:`history` and :attr:`report`."""

    # --- the run ----------------------------------------------------------------------------------
    def _nodes(self, grid: Grid, deadline: float) -> list[int]:
        while True:
            nodes = sorted(int(n) for n in grid.get_node_ids())
            if len(nodes) >= self.min_nodes:
                return nodes
            if time.monotonic() > deadline:
                raise ProtocolAbortError(f"only {len(nodes)} of {self.min_nodes} nodes connected")
            time.sleep(1.0)

    def _hello(self, grid: Grid, nodes: list[int]) -> dict[ClientId, int]:
        msgs = [Message(RecordDict({_RECORD: ConfigRecord({"hello": 1})}), dst_node_id=n,
                        message_type=HELLO_TYPE, group_id="hello") for n in nodes]
        node_of: dict[ClientId, int] = {}
        for rep in grid.send_and_receive(msgs, timeout=self.exchange_timeout):
            if rep.has_error():
                continue
            try:
                cid = _field(rep, "client", int)
            except MalformedMessageError:
                continue
            node = int(rep.metadata.src_node_id)
            if not 0 <= cid <= MAX_CLIENT_ID or cid in node_of or node in node_of.values():
                continue  # a duplicate or out-of-range identity is not admitted
            node_of[cid] = node
        if not node_of:
            raise ProtocolAbortError("no node declared a usable privfl client id")
        return node_of

    def _params_from(self, arrays: ArrayRecord | None) -> npt.NDArray[np.float32]:
        if arrays is not None and len(arrays) > 0:
            state = arrays.to_torch_state_dict()
            return self.param_spec.to_vector(state)
        return self.param_spec.to_vector(self.model.state_dict())

    def start(self, grid: Grid, initial_arrays: ArrayRecord, num_rounds: int = 3,
              timeout: float = 3600, train_config: ConfigRecord | None = None,
              evaluate_config: ConfigRecord | None = None,
              evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
              ) -> Result:
        """Run ``num_rounds`` privfl rounds over the grid's nodes; return the final model."""
        nodes = self._nodes(grid, time.monotonic() + timeout)
        self.node_of = self._hello(grid, nodes)
        ids = sorted(self.node_of)
        if ids != list(range(len(ids))):
            raise ConfigurationError(
                f"nodes declared client ids {ids[:10]}…; privfl needs 0..N-1 (one per node).")
        server = self._server(len(ids), num_rounds, self._params_from(initial_arrays))
        history = History(withheld=[w.reason for w in sorted(server.policy.withheld,
                                                             key=lambda w: w.value)])
        history.initial_loss, history.initial_accuracy = self._eval(server.params)
        result = Result()
        for r in range(1, num_rounds + 1):
            selected = server.sample(r)
            try:
                server.guard(r, selected)
            except BudgetExceededError as exc:
                history.stopped_early = f"before round {r}: {exc}"
                break
            record = self._round(grid, server, r, selected)
            record.test_loss, record.test_accuracy = self._eval(server.params)
            redact(record, server.policy)
            history.append(record)
            result.evaluate_metrics_serverapp[r] = MetricRecord(self._metrics(record))
        self.history = history
        self.report = self._report(server, history)
        self.params = server.params
        state = self.param_spec.to_state_dict(server.params)
        result.arrays = ArrayRecord(state)
        return result

    def _server(self, n: int, rounds: int, params: npt.NDArray[np.float32]) -> ServerRole:
        from privfl.core.stages import expand

        plan = self.privacy
        update = plan.client_update if plan is not None else None
        private = isinstance(update, PrivateUpdate) and update.ledger is not None
        policy = update.release_policy() if isinstance(update, PrivacyComponent) \
            else ReleasePolicy()
        stages = [*expand(self.stages), *expand(plan.stages if plan is not None else None)]
        server = ServerRole(
            param_spec=self.param_spec, params=params,
            sampler=self.sampler or FixedSizeSampling(n), num_clients=n, rounds=rounds,
            server_optimizer=self.server_optimizer, stages=stages, weighting=self.weighting,
            weight_cap=self.example_cap, seed=self.seed,
            example_ledger=update.ledger if private else None,  # type: ignore[union-attr]
            example_guard=update if private else None, policy=policy, evaluate=self.evaluate)
        server.configure(self.secure_sum)  # raises before any round if the sum cannot fit
        return server

    def _eval(self, params: npt.NDArray[np.float32]) -> tuple[float, float]:
        if self.evaluate is None:
            return math.nan, math.nan
        return self.evaluate(params)

    def _round(self, grid: Grid, server: ServerRole, r: int, selected: list[ClientId]
               ) -> RoundRecord:
        record = RoundRecord(round_id=r, selected=list(selected))
        t0 = time.perf_counter()
        if len(selected) < server.value_spec.min_clients:
            if not (not selected and server.close_round(r, None, record)):
                record.aborted = f"{len(selected)} clients were sampled"
            return record
        sr = server.open_round(r, selected)
        pool = FlowerClients(grid, self.node_of, r, self.exchange_timeout)
        try:
            outcome = InMemoryTransport().run(sr, pool)
        except ProtocolAbortError as exc:
            record.aborted = str(exc)
            record.dropped = {c: "round aborted" for c in selected}
        else:
            record.dropped = dict(outcome.dropped)
            record.contributors = list(outcome.result.contributors)
            record.bytes_up, record.bytes_down = outcome.bytes_up, outcome.bytes_down
            if sr.losses:
                record.train_loss = float(np.mean(sr.losses))
            if not server.close_round(r, outcome.result, record):
                record.aborted = "the aggregation released nothing this round"
        record.seconds["exchange"] = time.perf_counter() - t0
        return record

    def _metrics(self, record: RoundRecord) -> dict[str, int | float | list[int] | list[float]]:
        out: dict[str, int | float | list[int] | list[float]] = {
               "contributors": float(len(record.contributors)),
               "aborted": float(record.aborted is not None)}
        for k in ("test_loss", "test_accuracy"):
            v = getattr(record, k)
            if math.isfinite(v):
                out[k] = float(v)
        plan = self.privacy
        if plan is not None and plan.ledger is not None:
            from privfl.accounting.calibrate import COARSE_PLD_INTERVAL

            ledger = plan.ledger
            eps = [ledger.epsilon(u, pld_interval=COARSE_PLD_INTERVAL) for u in ledger.units]
            if eps:
                out["epsilon"] = float(max(eps))
        return out

    def _report(self, server: ServerRole, history: History) -> Any:
        from privfl.recipes import DPPlan

        plan = self.privacy if self.privacy is not None else DPPlan(client_update=None)
        return plan.report(server.trust, history)
