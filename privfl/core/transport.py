"""An in-memory transport that runs one secure-sum round and can drop clients at chosen stages.

Stage numbering: stage ``s`` is the ``s``-th request/reply exchange of a protocol (0 is the
first). A client dropped at stage ``s`` receives the stage-``s`` request but never replies, and
stays dropped for the rest of the round — the failure model of Bonawitz et al. (2017).

Replies are produced lazily and handed to the server one at a time, so the server's memory stays
O(d) even for many clients. A client that refuses (for example a non-finite update) or rejects
the server's request (malformed, or against the protocol) is treated as dropped; a reply the
server rejects excludes that client. All are recorded with the reason.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from privfl._validation import require_real
from privfl.core.securesum import ClientSession, ServerSession
from privfl.core.spec import ClientId, Contribution, SumResult
from privfl.errors import (
    ClientRefusedError,
    MalformedMessageError,
    ProtocolAbortError,
    ProtocolViolationError,
)

__all__ = [
    "DropoutPolicy",
    "InMemoryTransport",
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


@dataclass
class RoundOutcome:
    """What happened in one secure-sum round, as seen by the transport."""

    result: SumResult
    dropped: dict[ClientId, str] = field(default_factory=dict)
    bytes_up: int = 0
    bytes_down: int = 0
    stages: int = 0


class InMemoryTransport:
    """Carries the bytes between a server session and client sessions in one process."""

    def __init__(self, dropout: DropoutPolicy | None = None) -> None:
        self.dropout: DropoutPolicy = dropout if dropout is not None else NoDropout()

    def run_round(self, server: ServerSession, clients: Mapping[ClientId, ClientSession],
                  contributions: Mapping[ClientId, Contribution | None]) -> RoundOutcome:
        """Drive ``server`` until it returns a :class:`SumResult`.

        Each reply is handed to ``server.receive`` as soon as its client produces it, so only
        one client message is alive at a time. A reply the server rejects excludes its sender
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
            self._exchange(server, clients, contributions, requests, stage, dropped, counts)
            requests = server.step(())
            stage += 1
        return RoundOutcome(result=requests, dropped=dropped, bytes_up=counts[0],
                            bytes_down=counts[1], stages=stage)

    def _exchange(self, server: ServerSession, clients: Mapping[ClientId, ClientSession],
                  contributions: Mapping[ClientId, Contribution | None],
                  requests: Mapping[ClientId, bytes], stage: int, dropped: dict[ClientId, str],
                  counts: list[int]) -> None:
        for cid in sorted(requests):
            if cid in dropped:
                continue
            request = requests[cid]
            counts[1] += len(request)
            session = clients.get(cid)
            if session is None:
                dropped[cid] = f"stage {stage}: no such client session"
                continue
            if self.dropout.drops(server.round_id, stage, cid):
                dropped[cid] = f"stage {stage}: dropped out"
                continue
            try:
                reply = session.step(request, contributions.get(cid))
            except ClientRefusedError as exc:
                dropped[cid] = f"stage {stage}: client refused: {exc}"
                continue
            except (MalformedMessageError, ProtocolViolationError) as exc:
                dropped[cid] = f"stage {stage}: client rejected the request: {exc}"
                continue
            counts[0] += len(reply)
            try:
                server.receive(cid, reply)
            except (MalformedMessageError, ProtocolViolationError) as exc:
                dropped[cid] = f"stage {stage}: reply rejected: {exc}"

