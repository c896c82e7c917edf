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

**Two sides, bytes between.** A process is the *server* side only. Everything a client needs to
build its side travels as one wire message, :meth:`SecureSumProcess.client_config`; a client
rebuilds its side with :func:`client_process` (dispatched on the message kind through
:data:`CLIENT_SUMS`, plus the client's own provisioned secrets, such as CKKS keys). No object is
reachable from both sides. :meth:`SecureSumProcess.client_session` is a simulation convenience
that goes through the same bytes. Client sessions whose protocol spans several exchanges can
export their state to bytes and be restored (:meth:`ClientProcess.restore`), so that a client
that is a fresh process per message (Flower's deployment) keeps it in its node-local store.
"""

from __future__ import annotations

import enum
import importlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from privfl.core import wire
from privfl.core.spec import (
    MAX_CLIENT_ID,
    ClientId,
    ContributionLike,
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
    "CLIENT_SUMS",
    "SPEC_FIELDS",
    "ClientProcess",
    "ClientSession",
    "PlainSecureSum",
    "SecureSum",
    "SecureSumProcess",
    "ServerSession",
    "TrustAssumption",
    "Visibility",
    "client_process",
    "spec_from_message",
    "spec_values",
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

    def step(self, request: bytes, contribution: ContributionLike | None) -> bytes:
        """Answer one server request; ``contribution`` is used at the input stage."""
        ...

    def export_state(self) -> bytes:
        """The session's state between exchanges (secrets included: keep it on the client)."""
        ...


class ClientProcess(Protocol):
    """The client side of a secure sum, rebuilt from the server's :meth:`client_config`."""

    spec: ValueSpec

    def session(self, client: ClientId) -> ClientSession:
        """A fresh client-side state machine for one round."""
        ...

    def restore(self, client: ClientId, state: bytes) -> ClientSession:
        """A session from :meth:`ClientSession.export_state` (untrusted-format checks apply)."""
        ...


class SecureSumProcess(Protocol):
    """The server side of a secure sum configured for one :class:`ValueSpec`, across rounds."""

    spec: ValueSpec

    def new_round(self, round_id: int, clients: Sequence[ClientId]) -> ServerSession:
        """Start the server side of a round over the selected ``clients``."""
        ...

    def client_config(self) -> bytes:
        """The wire message a client builds its side from (public: no secrets)."""
        ...

    def client_session(self, client: ClientId) -> ClientSession:
        """Simulation convenience: a client session rebuilt from :meth:`client_config`."""
        ...


#: Client sides by the kind of their config message: ``kind -> "module:function"``; the function
#: takes ``(config: bytes, secrets: object | None)`` and returns a :class:`ClientProcess`.
CLIENT_SUMS: dict[int, str] = {
    4: "privfl.core.securesum:plain_client",
    24: "privfl.he.securesum:ckks_client",
    39: "privfl.secagg.pairwise:pairwise_client",
    42: "privfl.secagg.multiserver:multiserver_client",
}


def client_process(config: bytes, secrets: object | None = None) -> ClientProcess:
    """Rebuild a secure sum's client side from its config message (untrusted bytes).

    Args:
        config: :meth:`SecureSumProcess.client_config` of the server.
        secrets: The client's provisioned secrets where the mechanism has any (CKKS keys).

    Raises:
        MalformedMessageError: Not a config message of a known mechanism, or invalid.
    """
    target = CLIENT_SUMS.get(wire.peek_kind(config))
    if target is None:
        raise MalformedMessageError("not the configuration of a known secure sum")
    module, _, name = target.partition(":")
    factory = getattr(importlib.import_module(module), name)
    process: ClientProcess = factory(config, secrets)
    return process


F, T = wire.Field, wire.FieldType
#: The fields every secure sum's client config starts with: the :class:`ValueSpec`.
SPEC_FIELDS = (
    F(1, "length", T.UINT), F(2, "max_clients", T.UINT),
    F(3, "l2_bound", T.FLOAT, optional=True), F(4, "linf_bound", T.FLOAT, optional=True),
    F(5, "max_weight", T.FLOAT), F(6, "dtype", T.TEXT), F(7, "min_clients", T.UINT),
)


def spec_values(spec: ValueSpec) -> dict[str, object]:
    """The :data:`SPEC_FIELDS` values of ``spec``."""
    out: dict[str, object] = {"length": spec.length, "max_clients": spec.max_clients,
                              "max_weight": spec.max_weight, "dtype": spec.dtype,
                              "min_clients": spec.min_clients}
    if spec.l2_bound is not None:
        out["l2_bound"] = spec.l2_bound
    if spec.linf_bound is not None:
        out["linf_bound"] = spec.linf_bound
    return out


def spec_from_message(msg: wire.DecodedMessage) -> ValueSpec:
    """The :class:`ValueSpec` in a config message (raises :class:`MalformedMessageError`)."""
    v = msg.values
    try:
        l2, linf = v.get("l2_bound"), v.get("linf_bound")
        return ValueSpec(length=msg.uint("length"), max_clients=msg.uint("max_clients"),
                         l2_bound=None if l2 is None else msg.real("l2_bound"),
                         linf_bound=None if linf is None else msg.real("linf_bound"),
                         max_weight=msg.real("max_weight"), dtype=str(v["dtype"]),
                         min_clients=msg.uint("min_clients"))
    except ConfigurationError as exc:
        raise MalformedMessageError(f"invalid value spec in {msg.schema.name}: {exc}") from exc


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
_CONFIG = wire.Schema(kind=4, name="plain.config", fields=SPEC_FIELDS)
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

    def step(self, request: bytes, contribution: ContributionLike | None) -> bytes:
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

    def export_state(self) -> bytes:
        """One exchange: nothing to keep."""
        return b""


class _PlainClientProcess:
    def __init__(self, spec: ValueSpec) -> None:
        self.spec = spec

    def session(self, client: ClientId) -> ClientSession:
        return _PlainClient(self.spec, client)

    def restore(self, client: ClientId, state: bytes) -> ClientSession:
        if state:
            raise MalformedMessageError("the plain sum keeps no client state")
        return _PlainClient(self.spec, client)


def plain_client(config: bytes, secrets: object | None = None) -> ClientProcess:
    """The plain sum's client side from its config message."""
    return _PlainClientProcess(spec_from_message(wire.decode(config, _CONFIG)))


class _PlainProcess:
    def __init__(self, spec: ValueSpec) -> None:
        self.spec = spec

    def new_round(self, round_id: int, clients: Sequence[ClientId]) -> ServerSession:
        return _PlainServer(self.spec, round_id, check_round_clients(round_id, clients, self.spec))

    def client_config(self) -> bytes:
        return wire.encode(_CONFIG, 0, spec_values(self.spec))

    def client_session(self, client: ClientId) -> ClientSession:
        return client_process(self.client_config()).session(client)


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
