"""An in-memory transport that runs one round's exchanges and can drop clients at chosen stages.

Stage numbering: stage ``s`` is the ``s``-th request/reply exchange of a protocol (0 is the
first). A client dropped at stage ``s`` receives the stage-``s`` request but never replies, and
stays dropped for the rest of the round — the failure model of Bonawitz et al. (2017).

Replies are produced lazily and handed to the server one at a time, so the server's memory stays
O(d) even for many clients. A client that refuses (for example a non-finite update) or rejects
the server's request (malformed, or against the protocol) is treated as dropped; a reply the
server rejects excludes that client. All are recorded with the reason.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from privfl._validation import require_real
from privfl.core.securesum import ClientSession, ServerSession
from privfl.core.spec import ClientId, ContributionLike, SumResult
from privfl.errors import (
    ClientRefusedError,
    MalformedMessageError,
    PrivflError,
    ProtocolAbortError,
    ProtocolViolationError,
)

__all__ = [
    "ClientPool",
    "DropoutPolicy",
    "Handler",
    "InMemoryTransport",
    "LocalClients",
    "NoDropout",
    "RandomDropout",
    "RoundOutcome",
    "ScheduledDropout",
]

_MAX_STAGES = 64


class DropoutPolicy(Protocol):
    """Decides whether a client silently drops out at a stage of a round."""

    def drops(self, round_id: int, stage: int, client: ClientId) -> bool:
        """True if ``client`` fails to reply at ``stage`` of ``round_id``."""
        ...


class NoDropout:
    """Every client always replies."""

    def drops(self, round_id: int, stage: int, client: ClientId) -> bool:
        """Never drop."""
        return False


@dataclass(frozen=True)
class ScheduledDropout:
    """Drop chosen clients at chosen stages: ``{stage: {client, ...}}``, optionally per round."""

    at_stage: Mapping[int, frozenset[ClientId] | set[ClientId]]
    rounds: frozenset[int] | None = None

    def drops(self, round_id: int, stage: int, client: ClientId) -> bool:
        """True if ``client`` is scheduled to drop at ``stage`` (in a listed round)."""
        if self.rounds is not None and round_id not in self.rounds:
            return False
        return client in self.at_stage.get(stage, ())


@dataclass
class RandomDropout:
    """Each client drops independently with probability ``rate`` at each of ``stages``."""

    rate: float
    rng: np.random.Generator
    stages: frozenset[int] = frozenset({0})

    def __post_init__(self) -> None:
        require_real("rate", self.rate, low=0.0, high=1.0)

    def drops(self, round_id: int, stage: int, client: ClientId) -> bool:
        """Draw a Bernoulli(rate) at the configured stages."""
        return stage in self.stages and bool(self.rng.random() < self.rate)

    def state_dict(self) -> dict[str, Any]:
        """The generator's position."""
        from privfl.core.checkpoint import generator_state

        return {"rng": generator_state(self.rng)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the generator's position."""
        from privfl.core.checkpoint import require, restore_generator

        restore_generator(self.rng, require(state, "rng", dict))


@dataclass
class RoundOutcome:
    """What happened in one secure-sum round, as seen by the transport."""

    result: SumResult
    dropped: dict[ClientId, str] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    stages: int = 0


Handler = Callable[[bytes], bytes]
"""A client as the transport sees it: request bytes in, reply bytes out (or a PrivflError)."""

Reply = tuple[ClientId, "bytes | PrivflError"]


class ClientPool(Protocol):
    """Delivers requests to clients and yields their replies, in request order.

    A client's refusal or rejection of a request (:class:`~privfl.errors.ClientRefusedError`,
    :class:`~privfl.errors.MalformedMessageError`, :class:`~privfl.errors.ProtocolViolationError`)
    is yielded as the exception object, so that one client never stops the others; any other
    error propagates. Implementations may run clients
    anywhere (this process, worker processes, Ray actors); replies are consumed one at a time,
    so the server's memory stays O(d).
    """

    def exchange(self, requests: Sequence[tuple[ClientId, bytes]]) -> Iterator[Reply]:
        """Deliver every request; yield (client, reply or error) in the order given."""
        ...


class LocalClients:
    """Clients that are handlers in this process, called one after another."""

    def __init__(self, handlers: Mapping[ClientId, Handler]) -> None:
        self.handlers = handlers

    def exchange(self, requests: Sequence[tuple[ClientId, bytes]]) -> Iterator[Reply]:
        """Call each handler in turn."""
        for cid, request in requests:
            handler = self.handlers.get(cid)
            if handler is None:
                yield cid, ProtocolViolationError(f"no such client {cid}")
                continue
            try:
                yield cid, handler(request)
            except (ClientRefusedError, MalformedMessageError, ProtocolViolationError) as exc:
                yield cid, exc  # excluded; other errors (configuration) stop the round


class InMemoryTransport:
    """Carries the bytes between a server session and its clients, and can inject dropouts."""

    def __init__(self, dropout: DropoutPolicy | None = None) -> None:
        self.dropout: DropoutPolicy = dropout if dropout is not None else NoDropout()

    def state_dict(self) -> dict[str, Any]:
        """The dropout policy's state (a random policy's generator), if it has one."""
        return {"dropout": self.dropout.state_dict()
                if hasattr(self.dropout, "state_dict") else None}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        from privfl.core.checkpoint import require

        inner = state.get("dropout") if isinstance(state, Mapping) else None
        if hasattr(self.dropout, "load_state_dict"):
            self.dropout.load_state_dict(require(state, "dropout", dict))
        elif inner is not None:
            from privfl.errors import CheckpointError

            raise CheckpointError("the checkpoint has dropout state; this run has no random "
                                  "dropout")

    def run_round(self, server: ServerSession, clients: Mapping[ClientId, ClientSession],
                  contributions: Mapping[ClientId, ContributionLike | None]) -> RoundOutcome:
        """Drive ``server`` with secure-sum client sessions until it returns a result."""
        def handler(cid: ClientId) -> Handler:
            session = clients[cid]
            return lambda request: session.step(request, contributions.get(cid))

        return self.run(server, LocalClients({c: handler(c) for c in clients}))

    def run(self, server: ServerSession, clients: ClientPool) -> RoundOutcome:
        """Drive ``server`` until it returns a :class:`SumResult`.

        Each reply is handed to ``server.receive`` as soon as the pool yields it, so only one
        client message is alive at a time. A reply the server rejects excludes its sender
        (recorded in :attr:`RoundOutcome.dropped`); the stage is then closed with
        ``server.step(())``.

        Raises:
            ProtocolAbortError: The protocol cannot finish (too few survivors).
        """
        dropped: dict[ClientId, str] = {}
        counts = [0, 0]  # bytes up, bytes down
        requests = server.step(())
        stage = 0
        while not isinstance(requests, SumResult):
            if stage >= _MAX_STAGES:
                raise ProtocolAbortError(
                    f"round {server.round_id}: more than {_MAX_STAGES} stages.")
            self._exchange(server, clients, requests, stage, dropped, counts)
            requests = server.step(())
            stage += 1
        return RoundOutcome(result=requests, dropped=dropped, bytes_up=counts[0],
                            bytes_down=counts[1], stages=stage)

    def _exchange(self, server: ServerSession, clients: ClientPool,
                  requests: Mapping[ClientId, bytes], stage: int, dropped: dict[ClientId, str],
                  counts: list[int]) -> None:
        todo = []
        for cid in sorted(requests):
            if cid in dropped:
                continue
            counts[1] += len(requests[cid])
            if self.dropout.drops(server.round_id, stage, cid):
                dropped[cid] = f"stage {stage}: dropped out"
                continue
            todo.append((cid, requests[cid]))
        for cid, reply in clients.exchange(todo):
            if isinstance(reply, ClientRefusedError):
                dropped[cid] = f"stage {stage}: client refused: {reply}"
                continue
            if isinstance(reply, (MalformedMessageError, ProtocolViolationError)):
                dropped[cid] = f"stage {stage}: client rejected the request: {reply}"
                continue
            if isinstance(reply, PrivflError):
                raise reply
            counts[0] += len(reply)
            try:
                server.receive(cid, reply)
            except (MalformedMessageError, ProtocolViolationError) as exc:
                dropped[cid] = f"stage {stage}: reply rejected: {exc}"
