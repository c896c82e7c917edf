"""The two roles of federated learning, which share nothing but privfl wire messages.

* :class:`ServerRole` (one per federation): client sampling, the stages' server halves (central
  noise, the client-level ledger, adaptive clipping's state), the secure sum's server side, the
  server optimizer, the server's copy of the example-level accounts, evaluation, history.
* :class:`ClientRole` (one per client): local training (any client update, DP-SGD included,
  with the client's *own* example-level ledger and budget), the stages' client halves, the secure
  sum's client side, the client's provisioned secrets (CKKS keys).

A round, as messages:

1. server → each selected client: ``round.start`` — the global model, the stage chain's client
   configuration and this round's stage values (the clip norm, …), the secure sum's client
   configuration (ring parameters, CKKS parameters and key label, …), the weighting rule and the
   secure sum's first request. The message is identical for every client of the round, so an
   in-memory transport shares one copy.
2. then the secure sum's own requests, as they are; every client reply travels in a
   ``round.reply`` envelope that may also carry what the client is allowed to report (its
   training loss when no privacy layer withholds it; the public parameters of the DP events it
   charged itself).

The client trains only when the secure sum asks for its input (:class:`~privfl.core.spec.
LazyContribution`): a client that drops before that spends neither compute nor privacy, and the
update lives only for the exchange that sends it.

The :class:`ServerRound` a server role opens is itself a
:class:`~privfl.core.securesum.ServerSession`, so any transport that drives a secure sum drives a
round: the in-memory one, a pool of worker processes, Ray actors, or Flower messages.
"""

from __future__ import annotations

import enum
import math
import secrets as _secrets
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from privfl._csprng import RandomSource, SecureRandom
from privfl.core import wire
from privfl.core.history import RoundRecord
from privfl.core.params import ParamSpec
from privfl.core.release import ReleasePolicy, Withheld
from privfl.core.securesum import (
    ClientProcess,
    ClientSession,
    SecureSumProcess,
    ServerSession,
    client_process,
)
from privfl.core.spec import ClientId, Contribution, LazyContribution, SumResult, ValueSpec
from privfl.core.stages import Aggregate, ClientChain, StageChain
from privfl.core.weighting import Weighting
from privfl.errors import (
    ClientRefusedError,
    MalformedMessageError,
    NonFiniteUpdateError,
    ProtocolViolationError,
)

__all__ = ["ClientRole", "ServerRole", "ServerRound", "Trainer", "WeightRule"]

F, T = wire.Field, wire.FieldType
_START = wire.Schema(kind=50, name="round.start", fields=(
    F(1, "model", T.ARRAY, dtype="<f4"), F(2, "stages", T.BYTES), F(3, "stage_round", T.BYTES),
    F(4, "securesum", T.BYTES), F(5, "request", T.BYTES), F(6, "weighting", T.UINT, max_uint=1),
    F(7, "weight_cap", T.FLOAT), F(8, "withheld", T.UINT, max_uint=3)))
_REPLY = wire.Schema(kind=51, name="round.reply", fields=(
    F(1, "reply", T.BYTES), F(2, "train_loss", T.FLOAT, optional=True),
    F(3, "dp_sample_rate", T.FLOAT, optional=True),
    F(4, "dp_noise_multiplier", T.FLOAT, optional=True),
    F(5, "dp_steps", T.UINT, optional=True)))
_STATE = wire.Schema(kind=53, name="client.state", fields=(
    F(1, "last_round", T.UINT), F(2, "start", T.BYTES, optional=True),
    F(3, "session", T.BYTES, optional=True), F(4, "trained", T.UINT, max_uint=1),
    F(5, "ledger_rounds", T.ARRAY, dtype="<u8"), F(6, "ledger_events", T.ARRAY, dtype="<f8")))
_WITHHOLD_BITS = {Withheld.TRAIN_LOSS: 1, Withheld.PARTICIPATION: 2}
_NO_ROUND = (1 << 32) - 1


class WeightRule(enum.IntEnum):
    """How a client computes its weight, as the server tells it."""

    UNIFORM = 0
    EXAMPLES = 1
    """wₖ = min(nₖ / cap, 1), the cap being public (the largest client's size in simulation)."""


@runtime_checkable
class PrivateUpdate(Protocol):
    """A client update that charges an example-level DP event per round it trains."""

    ledger: Any

    def round_event(self) -> Any:
        """The DP event of one round."""
        ...

    def event_params(self) -> dict[str, float]:
        """Its public parameters (sample rate, noise multiplier, steps)."""
        ...


@dataclass
class Trainer:
    """What trains on a client: a model instance, its layout and a client update.

    Attributes:
        threads: torch intra-op threads while training (``None``: leave torch's setting). One
            thread per client is the default of the simulator: parallelism comes from running
            clients side by side, and a client's result then does not depend on where it ran
            (multi-threaded reductions sum in another order).
    """

    model: Any
    param_spec: ParamSpec
    client_update: Any
    threads: int | None = 1

    def train(self, params: npt.NDArray[np.float32], data: Any, rng: np.random.Generator,
              client_id: ClientId, round_id: int) -> Any:
        """One round of local training from ``params``."""
        if self.threads is None:
            return self.client_update.train(self.model, self.param_spec, params, data, rng,
                                            client_id, round_id)
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.client_update.train(self.model, self.param_spec, params, data, rng,
                                            client_id, round_id)
        finally:
            torch.set_num_threads(before)


@dataclass
class _ClientRound:
    round_id: int
    start: bytes
    session: ClientSession
    contribution: LazyContribution | None = None
    trained: bool = False
    loss: float = math.nan
    reported: bool = False


class ClientRole:
    """One client: its data, its trainer, its secrets, its own ledger; bytes in, bytes out.

    Args:
        client_id: This client's id in the federation (< 2³²).
        data: Its training examples (never leave this object).
        trainer: Its model and client update.
        secrets: Provisioned secrets of the secure sum (CKKS keys), if any.
        ledger: Its own example-level ledger (local DP): it refuses to train past its budget.
        seed: Simulation seed of local training randomness (batch order), mixed with the client
            and round ids so that results do not depend on where or in which order clients run;
            ``None`` draws it fresh.
        cache: Where decoded configurations (stage chains, secure-sum client processes) are
            kept, by their bytes. Roles in one simulation process that hold the same
            ``secrets`` may share one, so that a thousand clients decode a configuration once;
            a process holds public parameters and the shared secrets only, never a client's
            session.
    """

    def __init__(self, client_id: ClientId, data: Any, trainer: Trainer, *,
                 secrets: object | None = None, ledger: Any = None,
                 seed: int | None = None, cache: dict[bytes, Any] | None = None) -> None:
        self.client_id = client_id
        self.data = data
        self.trainer = trainer
        self.secrets = secrets
        self.ledger = ledger
        self.seed = seed
        self.last_round = -1
        self._round: _ClientRound | None = None
        self._cache: dict[bytes, Any] = {} if cache is None else cache

    # --- messages ------------------------------------------------------------------------------
    def handle(self, message: bytes) -> bytes:
        """Answer one server message (raises a :class:`~privfl.errors.PrivflError` to refuse)."""
        if wire.peek_kind(message) == _START.kind:
            return self._start(message)
        rnd = self._round
        if rnd is None:
            raise ProtocolViolationError(f"client {self.client_id}: no round is open")
        reply = rnd.session.step(message, rnd.contribution)
        return self._envelope(rnd, reply)

    def _start(self, message: bytes) -> bytes:
        msg = wire.decode(message, _START)
        if msg.round_id <= self.last_round:
            raise ProtocolViolationError(
                f"client {self.client_id}: round {msg.round_id} is not after round "
                f"{self.last_round} (a replayed or stale round)")
        chain = self._cached(msg.raw("stages"), ClientChain.from_config)
        process: ClientProcess = self._cached(
            msg.raw("securesum"), lambda b: client_process(b, self.secrets))
        params = msg.array("model")
        if params.shape != (self.trainer.param_spec.dim,):
            raise MalformedMessageError(
                f"model of shape {params.shape}, expected ({self.trainer.param_spec.dim},)")
        self.last_round = msg.round_id
        rnd = _ClientRound(msg.round_id, message, process.session(self.client_id))
        rnd.contribution = LazyContribution(lambda: self._contribute(rnd, msg, chain, process))
        self._round = rnd
        reply = rnd.session.step(msg.raw("request"), rnd.contribution)
        return self._envelope(rnd, reply)

    def _cached(self, blob: bytes, build: Callable[[bytes], Any]) -> Any:
        hit = self._cache.get(blob)
        if hit is None:
            if len(self._cache) > 4:
                self._cache.clear()
            hit = self._cache[blob] = build(blob)
        return hit

    def _contribute(self, rnd: _ClientRound, msg: wire.DecodedMessage, chain: ClientChain,
                    process: ClientProcess) -> Contribution:
        if rnd.trained:
            raise ProtocolViolationError(
                f"client {self.client_id}: round {rnd.round_id}'s input was already sent")
        update = self.trainer.client_update
        event = update.round_event() if isinstance(update, PrivateUpdate) else None
        if event is not None and self.ledger is not None:
            from privfl.accounting.ledger import PrivacyUnit
            from privfl.errors import BudgetExceededError

            try:
                self.ledger.check(PrivacyUnit.example(self.client_id), event)
            except BudgetExceededError as exc:
                raise ClientRefusedError(f"client {self.client_id}: {exc}") from exc
        rng = (np.random.default_rng([self.seed, self.client_id, rnd.round_id])
               if self.seed is not None else np.random.default_rng(_secrets.randbits(128)))
        params = np.asarray(msg.array("model"), dtype=np.float32)
        result = self.trainer.train(params, self.data, rng, self.client_id, rnd.round_id)
        rnd.trained = True
        if event is not None and self.ledger is not None:
            from privfl.accounting.ledger import PrivacyUnit

            self.ledger.record(PrivacyUnit.example(self.client_id), event,
                               round_id=rnd.round_id, mechanism="DP-SGD (Opacus)",
                               params=update.event_params())
        rnd.loss = float(result.train_loss)
        delta = np.asarray(result.delta)
        if not np.isfinite(delta).all():
            raise NonFiniteUpdateError(
                f"client {self.client_id}: the update contains NaN or Inf; refusing to send it.")
        x = chain.apply(delta.astype(np.float64), msg.raw("stage_round"),
                        client_id=self.client_id, round_id=rnd.round_id)
        return Contribution(x, self._weight(msg, len(self.data)))

    @staticmethod
    def _weight(msg: wire.DecodedMessage, examples: int) -> float:
        if msg.uint("weighting") == WeightRule.UNIFORM:
            return 1.0
        cap = msg.real("weight_cap")
        if not cap > 0:
            raise MalformedMessageError(f"weight cap must be > 0. Found {cap}.")
        return min(examples / cap, 1.0)

    def _envelope(self, rnd: _ClientRound, reply: bytes) -> bytes:
        if rnd.contribution is not None:
            rnd.contribution.release()  # the update lives only for the exchange that sent it
        values: dict[str, object] = {"reply": reply}
        if rnd.contribution is not None and rnd.contribution.computed and not rnd.reported:
            rnd.reported = True
            withheld = wire.decode(rnd.start, _START).uint("withheld")
            update = self.trainer.client_update
            if not withheld & _WITHHOLD_BITS[Withheld.TRAIN_LOSS] and math.isfinite(rnd.loss):
                values["train_loss"] = rnd.loss
            if isinstance(update, PrivateUpdate):
                p = update.event_params()
                values.update(dp_sample_rate=p["sample_rate"],
                              dp_noise_multiplier=p["noise_multiplier"],
                              dp_steps=int(p["steps"]))
        return wire.encode(_REPLY, rnd.round_id, values)

    def state_dict(self) -> dict[str, Any]:
        """This client's state at a round boundary: the last round it answered and its ledger.

        No secret and no round session is included (a checkpoint is taken between rounds, and
        keys are provisioned afresh when a run resumes).
        """
        return {"last_round": self.last_round,
                "ledger": None if self.ledger is None else self.ledger.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` (the client's ledger keeps every charge it recorded)."""
        from privfl.core.checkpoint import require
        from privfl.errors import CheckpointError

        last = require(state, "last_round", int)
        saved = require(state, "ledger", (dict, type(None)))
        if (saved is None) != (self.ledger is None):
            raise CheckpointError(f"client {self.client_id}: the checkpoint and this run "
                                  "disagree on whether it keeps an example-level ledger")
        if self.ledger is not None:
            self.ledger.load_state_dict(saved)
        self.last_round = last
        self._round = None

    def new_run(self) -> None:
        """A new federation run starts (rounds count from 1 again); the ledger is kept."""
        self.last_round = -1
        self._round = None

    # --- state (for clients that are a fresh process per message) -----------------------------
    def export_state(self) -> bytes:
        """This client's state between messages, secrets included: keep it on the client."""
        rnd = self._round
        values: dict[str, object] = {"last_round": max(self.last_round, 0),
                                     "trained": int(bool(rnd and rnd.trained))}
        if rnd is not None:
            values.update(start=rnd.start, session=rnd.session.export_state())
        rounds, events = _ledger_rows(self.ledger, self.client_id)
        values.update(ledger_rounds=rounds, ledger_events=events)
        return wire.encode(_STATE, rnd.round_id if rnd else 0, values)

    def restore_state(self, state: bytes) -> None:
        """Inverse of :meth:`export_state` (raises :class:`MalformedMessageError`)."""
        msg = wire.decode(state, _STATE)
        self.last_round = msg.uint("last_round") if "start" in msg.values else -1
        if "start" in msg.values:
            start = msg.raw("start")
            smsg = wire.decode(start, _START)
            chain = self._cached(smsg.raw("stages"), ClientChain.from_config)
            process: ClientProcess = self._cached(
                smsg.raw("securesum"), lambda b: client_process(b, self.secrets))
            rnd = _ClientRound(smsg.round_id, start,
                               process.restore(self.client_id, msg.raw("session")),
                               trained=bool(msg.uint("trained")))
            rnd.contribution = LazyContribution(
                lambda: self._contribute(rnd, smsg, chain, process))
            rnd.reported = rnd.trained
            self._round = rnd
        _restore_ledger(self.ledger, self.client_id, msg.array("ledger_rounds"),
                        msg.array("ledger_events"))


def _ledger_rows(ledger: Any, client: ClientId) -> tuple[np.ndarray, np.ndarray]:
    if ledger is None:
        return np.zeros(0, "<u8"), np.zeros((0,), "<f8")
    from privfl.accounting.ledger import PrivacyUnit

    entries = ledger.entries(PrivacyUnit.example(client))
    rounds = np.array([e.round_id for e in entries], dtype="<u8")
    events = np.array([[e.params["sample_rate"], e.params["noise_multiplier"],
                        e.params["steps"]] for e in entries], dtype="<f8").reshape(-1)
    return rounds, events


def _restore_ledger(ledger: Any, client: ClientId, rounds: Any, events: Any) -> None:
    if ledger is None or not len(rounds):
        return
    from privfl.accounting.accountant import dpsgd_event
    from privfl.accounting.ledger import PrivacyUnit

    unit = PrivacyUnit.example(client)
    if ledger.entries(unit) or len(events) != 3 * len(rounds):
        raise MalformedMessageError("client ledger state is inconsistent")
    for r, (q, z, k) in zip(rounds, np.asarray(events).reshape(-1, 3), strict=True):
        ledger.record(unit, dpsgd_event(sample_rate=float(q), noise_multiplier=float(z),
                                        steps=int(k)),
                      round_id=int(r), mechanism="DP-SGD (Opacus)", already_released=True,
                      params={"sample_rate": float(q), "noise_multiplier": float(z),
                              "steps": int(k)})


class ServerRound:
    """The server side of one round: a :class:`~privfl.core.securesum.ServerSession`."""

    def __init__(self, role: ServerRole, round_id: int, session: ServerSession,
                 start: Mapping[str, object]) -> None:
        self.role = role
        self.round_id = round_id
        self.session = session
        self._start = start
        self._opened = False
        self.losses: list[float] = []

    def step(self, replies: Iterable[tuple[ClientId, bytes]]
             ) -> Mapping[ClientId, bytes] | SumResult:
        """Fold in replies; return the next requests (the first ones wrapped) or the result."""
        for client, message in replies:
            self.receive(client, message)
        nxt = self.session.step(())
        if self._opened or isinstance(nxt, SumResult):
            return nxt
        self._opened = True
        shared: dict[bytes, bytes] = {}
        return {c: shared.setdefault(req, wire.encode(
            _START, self.round_id, {**self._start, "request": req})) for c, req in nxt.items()}

    def receive(self, client: ClientId, message: bytes) -> None:
        """Unwrap a client's envelope and fold the secure-sum reply into the session."""
        msg = wire.decode(message, _REPLY)
        if msg.round_id != self.round_id:
            raise ProtocolViolationError(
                f"client {client}: reply for round {msg.round_id}, expected {self.round_id}")
        self.session.receive(client, msg.raw("reply"))  # validated there; raises untouched
        if "train_loss" in msg.values:
            self.losses.append(msg.real("train_loss"))
        if "dp_steps" in msg.values:
            self.role.record_client_event(client, self.round_id, msg)


@dataclass
class ServerRole:
    """The server: sampling, stages, secure-sum server, optimizer, accounts, evaluation.

    Construct, then call :meth:`configure` once; a driver then runs rounds with
    :meth:`sample`, :meth:`guard`, :meth:`open_round` and :meth:`close_round`.
    """

    param_spec: ParamSpec
    params: npt.NDArray[np.float32]
    sampler: Any
    num_clients: int
    rounds: int
    server_optimizer: Any
    stages: Sequence[Any] = ()
    weights: npt.NDArray[np.float64] | None = None
    weighting: Weighting = Weighting.EXAMPLES
    weight_cap: float = 1.0
    seed: int = 0
    secure_sampling: bool = False
    example_ledger: Any = None
    example_guard: Any = None
    policy: ReleasePolicy = field(default_factory=ReleasePolicy)
    evaluate: Callable[[npt.NDArray[np.float32]], tuple[float, float]] | None = None

    def configure(self, secure_sum: Any) -> ValueSpec:
        """Configure the stage chain and create the secure sum's server side from the factory.

        The role keeps the server process and the trust statement, not the factory (which, as
        the provisioner in a simulation, may hold the clients' keys).
        """
        from privfl.core.release import merge_policies
        from privfl.core.stages import FederationInfo

        self.chain = StageChain(list(self.stages))
        weights = self.weights if self.weights is not None else np.ones(self.num_clients)
        info = FederationInfo(num_clients=self.num_clients, weights=weights,
                              sampler=self.sampler, rounds=self.rounds)
        base = ValueSpec(length=self.param_spec.dim,
                         max_clients=self.sampler.max_clients(self.num_clients), max_weight=1.0)
        self.value_spec = self.chain.configure(base, info, secure_sum)
        self.process: SecureSumProcess = secure_sum.create(self.value_spec)
        self.trust = secure_sum.trust_assumption()
        self.mechanism = str(secure_sum.name)
        merged = merge_policies(self.chain.stages)
        self.policy = ReleasePolicy(withheld=merged.withheld | self.policy.withheld,
                                    secure_sampling=merged.secure_sampling or
                                    self.policy.secure_sampling or self.secure_sampling)
        self._rng: RandomSource = (SecureRandom() if self.policy.secure_sampling
                                   else np.random.default_rng(self.seed))
        self._chain_config = self.chain.client_config()
        self._ss_config = self.process.client_config()
        return self.value_spec

    # --- rounds ----------------------------------------------------------------------------------
    def sample(self, round_id: int) -> list[ClientId]:
        """This round's participants (from the CSPRNG when a privacy layer needs it)."""
        out: list[ClientId] = self.sampler.sample(list(range(self.num_clients)), self._rng)
        return out

    def guard(self, round_id: int, selected: list[ClientId]) -> None:
        """Raise :class:`~privfl.errors.BudgetExceededError` to stop before ``round_id``."""
        self.chain.before_round(round_id, selected)
        if self.example_guard is not None:
            self.example_guard.before_round(round_id, selected)

    def open_round(self, round_id: int, selected: list[ClientId]) -> ServerRound:
        """The round's server session; its first requests carry the model and the configs."""
        session = self.process.new_round(round_id, selected)
        withheld = sum(_WITHHOLD_BITS[w] for w in self.policy.withheld)
        start = {"model": self.params, "stages": self._chain_config,
                 "stage_round": self.chain.round_config(round_id), "securesum": self._ss_config,
                 "weighting": int(self.weighting is Weighting.EXAMPLES),
                 "weight_cap": float(self.weight_cap), "withheld": withheld}
        return ServerRound(self, round_id, session, start)

    def record_client_event(self, client: ClientId, round_id: int,
                            msg: wire.DecodedMessage) -> None:
        """Copy a client's reported DP-SGD event into the server's example-level accounts."""
        if self.example_ledger is None:
            return
        from privfl.accounting.accountant import dpsgd_event
        from privfl.accounting.ledger import PrivacyUnit

        q, z, k = (msg.real("dp_sample_rate"), msg.real("dp_noise_multiplier"),
                   msg.uint("dp_steps"))
        try:
            event = dpsgd_event(sample_rate=q, noise_multiplier=z, steps=k)
        except Exception as exc:
            raise MalformedMessageError(f"client {client}: bad DP event report: {exc}") from exc
        self.example_ledger.record(PrivacyUnit.example(client), event, round_id=round_id,
                                   mechanism="DP-SGD (Opacus)", already_released=True,
                                   params={"noise_multiplier": z, "sample_rate": q,
                                           "steps_per_round": k})

    def close_round(self, round_id: int, result: SumResult | None,
                    record: RoundRecord) -> bool:
        """The aggregate through the stages, then the server optimizer; ``True`` if released.

        ``result`` is ``None`` for a round without participants (a DP stage may still release
        noise, as the accounting assumes).
        """
        if result is None:
            result = SumResult(weighted_sum=np.zeros(self.value_spec.length), total_weight=0.0,
                               contributors=())
        agg: Aggregate = self.chain.finish(round_id, result, record)
        avg = agg.mean()
        if avg is None:
            return False
        self.params = self.server_optimizer.step(self.params, avg)
        return True

    # --- checkpoints -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The server's state between rounds: model, sampling generator, optimizer, stages.

        The privacy ledgers are saved by the run, once each (stages and the client update
        share them with the DP plan). A CSPRNG has no state to save: a resumed run keeps
        sampling from fresh OS randomness, as the privacy analysis assumes.
        """
        from privfl.core.checkpoint import optional_generator_state

        return {"params": np.array(self.params, copy=True),
                "sampling_rng": optional_generator_state(self._rng),
                "optimizer": (self.server_optimizer.state_dict()
                              if hasattr(self.server_optimizer, "state_dict") else None),
                "stages": self.chain.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` into a role built (and configured) from the same config.

        Raises:
            CheckpointError: A state of another model shape, sampling or stage chain.
        """
        from privfl.core.checkpoint import (
            require,
            require_array,
            restore_optional_generator,
        )

        params = require_array(state, "params", (self.param_spec.dim,), np.float32)
        if hasattr(self.server_optimizer, "load_state_dict"):
            self.server_optimizer.load_state_dict(require(state, "optimizer", dict))
        self.chain.load_state_dict(require(state, "stages", dict))
        restore_optional_generator(self._rng, state, "sampling_rng", "client sampling")
        self.params = params
