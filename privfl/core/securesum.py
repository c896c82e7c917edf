"""The secure-sum interface (a stage machine) and the plain, unprotected sum.

Every mechanism that adds client values (plain, CKKS, pairwise masking, multi-server sharing)
implements the same three-level interface:

* :class:`SecureSum` — a factory; ``create(spec)`` validates bounds once, up front;
* :class:`SecureSumProcess` — per federation; hands out one server session and one client
  session per round;
* :class:`ServerSession` / :class:`ClientSession` — the per-round state machines. The driver
  loops ``server.step(replies)`` until it returns a :class:`~privfl.core.spec.SumResult`;
  a protocol may take one exchange (plain, CKKS) or several (pairwise SecAgg).

``ServerSession.step`` takes an *iterable* of ``(client, bytes)`` pairs and folds each reply
into its state as it arrives, so the server needs O(d) memory, not O(n·d). A reply that fails
validation raises from the iteration for that client only (the transport records the client as
excluded) and never touches the running state.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from privfl.core import wire
from privfl.core.spec import (
    MAX_CLIENT_ID,
    ClientId,
    Contribution,
    SumResult,
    ValueSpec,
    check_min_clients,
)
from privfl.errors import (
    ConfigurationError,
    MalformedMessageError,
    ProtocolAbortError,
    ProtocolViolationError,
)

__all__ = [
    "ClientSession",
    "PlainSecureSum",
    "SecureSum",
    "SecureSumProcess",
    "ServerSession",
    "TrustAssumption",
    "Visibility",
]

Replies = Iterable[tuple[ClientId, bytes]]


class Visibility(enum.Enum):
    """What the aggregating server can see of an individual client's update."""

    PLAINTEXT = "plaintext"
    CIPHERTEXT = "ciphertext"
    MASKED = "masked"
    SHARES = "shares"


@dataclass(frozen=True, slots=True, kw_only=True)
class TrustAssumption:
    """What a secure sum protects, against whom, and under which assumptions (for reports)."""

    mechanism: str
    server_sees: Visibility
    statement: str
    broken_by: str
    dropouts_tolerated: str


@runtime_checkable
class ServerSession(Protocol):
    """Server side of one round."""

    round_id: int

    def step(self, replies: Replies) -> Mapping[ClientId, bytes] | SumResult:
        """Fold in the replies to the last requests; return the next requests or the result."""
        ...

    def receive(self, client: ClientId, message: bytes) -> None:
        """Validate one reply and fold it in; raises without changing state when it is bad."""
        ...


@runtime_checkable
class ClientSession(Protocol):
    """Client side of one round."""

    def step(self, request: bytes, contribution: Contribution | None) -> bytes:
        """Answer one server request; ``contribution`` is used at the input stage."""
        ...


class SecureSumProcess(Protocol):
    """A secure sum configured for one :class:`ValueSpec`, across rounds."""

    spec: ValueSpec

    def new_round(self, round_id: int, clients: Sequence[ClientId]) -> ServerSession:
        """Start the server side of a round over the selected ``clients``."""
        ...

    def client_session(self, client: ClientId) -> ClientSession:
        """A fresh client-side state machine for one round."""
        ...


class SecureSum(Protocol):
    """Factory of secure-sum processes; one per mechanism."""

    name: str

    def create(self, spec: ValueSpec) -> SecureSumProcess:
        """Validate ``spec`` for this mechanism and build the process."""
        ...

    def trust_assumption(self) -> TrustAssumption:
        """What this mechanism protects and under which assumptions."""
        ...


_REQUEST = wire.Schema(kind=1, name="plain.request", fields=(
    wire.Field(1, "length", wire.FieldType.UINT),
))
_INPUT32 = wire.Schema(kind=2, name="plain.input", fields=(
    wire.Field(1, "weight", wire.FieldType.FLOAT),
    wire.Field(2, "value", wire.FieldType.ARRAY, dtype="<f4"),
))
_INPUT64 = wire.Schema(kind=3, name="plain.input64", fields=(
    wire.Field(1, "weight", wire.FieldType.FLOAT),
    wire.Field(2, "value", wire.FieldType.ARRAY, dtype="<f8"),
))


def check_round_clients(round_id: int, clients: Sequence[ClientId], spec: ValueSpec) -> list[int]:
    """Validate a round id and a client list for ``new_round`` (shared by the mechanisms)."""
    if isinstance(round_id, bool) or not isinstance(round_id, int) or not 0 <= round_id < 2**32:
        raise ConfigurationError(f"`round_id` must be an int in [0, 2**32). Found {round_id!r}.")
    ids = list(clients)
    if not ids:
        raise ProtocolAbortError(f"round {round_id}: no clients selected.")
    bad = [c for c in ids if isinstance(c, bool) or not isinstance(c, (int, np.integer))
           or not 0 <= c <= MAX_CLIENT_ID]
    if bad:
        raise ConfigurationError(
            f"client ids must be integers in [0, 2**32) (they travel as u32). Found {bad[:5]!r}.")
    ids = [int(c) for c in ids]
    if len(set(ids)) != len(ids):
        raise ConfigurationError(f"`clients` must be distinct ids. Found {ids!r}.")
    if len(ids) > spec.max_clients:
        raise ConfigurationError(
            f"round {round_id}: {len(ids)} clients exceed `max_clients`={spec.max_clients}.")
    return ids


class _PlainServer:
    """One round of the plain sum: request, then fold each input into a float64 running sum."""

    def __init__(self, spec: ValueSpec, round_id: int, clients: Sequence[ClientId]) -> None:
        self.spec = spec
        self.round_id = round_id
        self._expected = frozenset(clients)
        self._received: list[ClientId] = []
        self._sum = np.zeros(spec.length, dtype=np.float64)
        self._weight = 0.0
        self._stage = 0
        self._schema = _INPUT32 if spec.dtype == "float32" else _INPUT64

    def receive(self, client: ClientId, message: bytes) -> None:
        if self._stage != 1:
            raise ProtocolViolationError(f"round {self.round_id}: not accepting inputs now.")
        if client not in self._expected:
            raise ProtocolViolationError(
                f"round {self.round_id}: client {client} was not selected.")
        if client in self._received:
            raise ProtocolViolationError(
                f"round {self.round_id}: duplicate input from client {client}.")
        msg = wire.decode(message, self._schema)
        if msg.round_id != self.round_id:
            raise ProtocolViolationError(
                f"client {client}: message for round {msg.round_id}, expected {self.round_id}.")
        value = msg.array("value")
        weight = msg.real("weight")
        if value.shape != (self.spec.length,):
            raise MalformedMessageError(
                f"client {client}: value has shape {value.shape}, expected ({self.spec.length},).")
        if not 0.0 < weight <= self.spec.max_weight:
            raise MalformedMessageError(
                f"client {client}: weight {weight} outside (0, {self.spec.max_weight}].")
        np.add(self._sum, value, out=self._sum)  # validated above; the first mutation is here
        self._weight += weight
        self._received.append(client)

    def step(self, replies: Replies) -> Mapping[ClientId, bytes] | SumResult:
        if self._stage == 0:
            self._stage = 1
            req = wire.encode(_REQUEST, self.round_id, {"length": self.spec.length})
            return {c: req for c in sorted(self._expected)}
        if self._stage != 1:
            raise ProtocolViolationError(f"round {self.round_id} is already finished.")
        for client, message in replies:
            self.receive(client, message)
        self._stage = 2
        if not self._received:
            raise ProtocolAbortError(
                f"round {self.round_id}: 0 of {len(self._expected)} clients survived; "
                "the plain sum needs at least 1.")
        check_min_clients(len(self._received), self.spec, f"round {self.round_id}")
        return SumResult(weighted_sum=self._sum, total_weight=self._weight,
                         contributors=tuple(sorted(self._received)))


class _PlainClient:
    def __init__(self, spec: ValueSpec, client: ClientId) -> None:
        self.spec = spec
        self.client = client
        self._schema = _INPUT32 if spec.dtype == "float32" else _INPUT64

    def step(self, request: bytes, contribution: Contribution | None) -> bytes:
        req = wire.decode(request, _REQUEST)
        if req.uint("length") != self.spec.length:
            raise MalformedMessageError(
                f"request asks for length {req.uint('length')}, expected {self.spec.length}.")
        if contribution is None:
            raise ConfigurationError("the plain sum needs a contribution at its input stage.")
        value = np.asarray(contribution.value)
        self.spec.check_value(value, contribution.weight)
        weighted = value.astype(np.float64) * contribution.weight
        return wire.encode(self._schema, req.round_id, {
            "weight": contribution.weight,
            "value": weighted.astype(self._schema.fields[1].dtype or "<f4"),
        })


class _PlainProcess:
    def __init__(self, spec: ValueSpec) -> None:
        self.spec = spec

    def new_round(self, round_id: int, clients: Sequence[ClientId]) -> ServerSession:
        return _PlainServer(self.spec, round_id, check_round_clients(round_id, clients, self.spec))

    def client_session(self, client: ClientId) -> ClientSession:
        return _PlainClient(self.spec, client)


class PlainSecureSum:
    """The unprotected sum: the baseline every other mechanism is measured against.

    Each client sends w·x (float32, or float64 with ``ValueSpec(dtype="float64")``) and w; the
    server adds them into a float64 running sum.

    Threat model: none. The server sees every client's weighted update in the clear.
    """

    name = "plain"

    def create(self, spec: ValueSpec) -> SecureSumProcess:
        """Build the process; any spec is accepted (no bounds are needed)."""
        return _PlainProcess(spec)

    def trust_assumption(self) -> TrustAssumption:
        """The plain sum protects nothing from the server."""
        return TrustAssumption(
            mechanism=self.name,
            server_sees=Visibility.PLAINTEXT,
            statement="The server sees every client's update.",
            broken_by="nothing to break: no confidentiality is provided",
            dropouts_tolerated="any number, as long as one client survives",
        )
