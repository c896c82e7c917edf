"""Multi-server additive secret sharing (Prio-style): private while one server is honest.

Each client encodes x' = (w·x, w) in the ring Z_{2^b} (core.ring) and splits it into k ≥ 2
additive shares: k − 1 of them are ChaCha20 expansions of fresh 256-bit seeds, the last is
x' − Σ PRG(seedᵢ) mod 2^b. Server i < k − 1 receives only seedᵢ (48 bytes on the wire), server
k − 1 the vector share (b/8 bytes per parameter). Every part is sealed to its server (X25519
ephemeral key agreement, HKDF-SHA256, ChaCha20-Poly1305), so a server that relays the others'
parts learns nothing from them. Each server adds what it receives; the sum of the k server sums
is Σ x' mod 2^b.

Threat model: k semi-honest servers; any k − 1 of them together see shares that are uniform
and independent of the inputs. Dropouts cost nothing: a client that sends nothing is in no
server's sum. All servers must publish their sums for the result.

In this simulation one :class:`~privfl.core.securesum.ServerSession` hosts the k aggregators,
each with its own key and state; a deployment runs them on separate machines.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from privfl._validation import require_int
from privfl.core import wire
from privfl.core.ring import RingEncoding, ring_for, rounding_rng
from privfl.core.securesum import (
    SPEC_FIELDS,
    ClientSession,
    ServerSession,
    TrustAssumption,
    Visibility,
    check_round_clients,
    spec_from_message,
    spec_values,
)
from privfl.core.spec import (
    ClientId,
    ContributionLike,
    SumResult,
    ValueSpec,
    check_min_clients,
    check_total_weight,
    weighted_input,
)
from privfl.errors import (
    ConfigurationError,
    EncodingOverflowError,
    MalformedMessageError,
    ProtocolAbortError,
    ProtocolViolationError,
)
from privfl.secagg.keyagreement import check_public, exchange, hkdf, public_bytes
from privfl.secagg.prg import expand_mask

__all__ = ["MultiServerSecureSum"]

F, T = wire.Field, wire.FieldType
_REQUEST = wire.Schema(kind=40, name="multiserver.request", fields=(
    F(1, "server_pks", T.BYTES), F(2, "length", T.UINT)))
_INPUT = wire.Schema(kind=41, name="multiserver.input", fields=(
    F(1, "eph_pk", T.BYTES), F(2, "sealed_seeds", T.BYTES), F(3, "sealed_vector", T.BYTES)))
_SHARE_PURPOSE = 7
_TAG = 16


def _key(shared: bytes, round_id: int, client: int, server: int) -> bytes:
    return hkdf(shared, b"privfl-multiserver-" + bytes(f"{round_id}/{client}/{server}", "ascii"))


def _nonce(server: int) -> bytes:
    return server.to_bytes(12, "little")


@dataclass(frozen=True)
class _Config:
    spec: ValueSpec
    ring: RingEncoding
    servers: int
    precision: float = 1e-6
    rounding_seed: int | None = None

    @property
    def length(self) -> int:
        return self.spec.length + 1


class _Aggregator:
    """One server's long-lived identity: its private key. Running sums live in each round."""

    def __init__(self, index: int) -> None:
        self.index = index
        self._sk = X25519PrivateKey.generate()
        self.public = public_bytes(self._sk)

    def open(self, eph_pk: bytes, sealed: bytes, round_id: int, client: int) -> bytes:
        shared = exchange(self._sk, eph_pk, f"client {client}")
        try:
            return ChaCha20Poly1305(_key(shared, round_id, client, self.index)).decrypt(
                _nonce(self.index), sealed, eph_pk)
        except InvalidTag as exc:
            raise MalformedMessageError(f"server {self.index}: share fails authentication") from exc


class _Server:
    def __init__(self, cfg: _Config, aggregators: list[_Aggregator], round_id: int,
                 clients: Sequence[ClientId]) -> None:
        self.cfg = cfg
        self.aggs = aggregators
        # One running sum per server, owned by this round: concurrent rounds never share one.
        self.totals = [np.zeros(cfg.length, dtype=cfg.ring.dtype) for _ in aggregators]
        self.round_id = round_id
        self.expected = frozenset(clients)
        self.received: list[ClientId] = []
        self.stage = 0
        self._scratch = np.empty(cfg.length, dtype=cfg.ring.dtype)

    def receive(self, client: ClientId, message: bytes) -> None:
        if self.stage != 1:
            raise ProtocolViolationError(f"round {self.round_id}: not accepting inputs now")
        if client not in self.expected:
            raise ProtocolViolationError(f"round {self.round_id}: client {client} not selected")
        if client in self.received:
            raise ProtocolViolationError(f"round {self.round_id}: duplicate from {client}")
        msg = wire.decode(message, _INPUT)
        if msg.round_id != self.round_id:
            raise ProtocolViolationError(f"client {client}: message for round {msg.round_id}")
        eph = msg.raw("eph_pk")
        seeds_blob = msg.raw("sealed_seeds")
        k = self.cfg.servers
        if len(seeds_blob) != (k - 1) * (32 + _TAG):
            raise MalformedMessageError("sealed seeds of the wrong size")
        check_public(eph, f"client {client}")
        want = self.cfg.length * self.cfg.ring.word_bytes + _TAG
        if len(msg.raw("sealed_vector")) != want:
            raise MalformedMessageError(
                f"vector share of {len(msg.raw('sealed_vector'))} bytes, expected {want}")
        # Each server opens only its own part; all must authenticate before any sum changes.
        seeds = [self.aggs[i].open(eph, seeds_blob[i * 48 : (i + 1) * 48], self.round_id, client)
                 for i in range(k - 1)]
        vector = self.aggs[k - 1].open(eph, msg.raw("sealed_vector"), self.round_id, client)
        for i, seed in enumerate(seeds):
            expand_mask(seed, self.cfg.length, self.cfg.ring.dtype, purpose=_SHARE_PURPOSE,
                        round_id=self.round_id, out=self._scratch)
            np.add(self.totals[i], self._scratch, out=self.totals[i])
        last = np.frombuffer(vector, dtype=self.cfg.ring.dtype.newbyteorder("<"))
        np.add(self.totals[k - 1], last, out=self.totals[k - 1])
        self.received.append(client)

    def step(self, replies: Iterable[tuple[ClientId, bytes]]
             ) -> Mapping[ClientId, bytes] | SumResult:
        for client, message in replies:
            self.receive(client, message)
        if self.stage == 0:
            self.stage = 1
            req = wire.encode(_REQUEST, self.round_id, {
                "server_pks": b"".join(a.public for a in self.aggs), "length": self.cfg.length})
            return {c: req for c in sorted(self.expected)}
        if self.stage != 1:
            raise ProtocolViolationError(f"round {self.round_id} is finished")
        self.stage = 2
        if not self.received:
            raise ProtocolAbortError(f"round {self.round_id}: 0 of {len(self.expected)} clients "
                                     "survived; at least 1 is needed.")
        check_min_clients(len(self.received), self.cfg.spec, f"round {self.round_id}")
        total = self.totals[0].copy()
        for t in self.totals[1:]:  # each server publishes its sum
            np.add(total, t, out=total)
        decoded = self.cfg.ring.decode(total)
        contributors = tuple(sorted(self.received))
        check_total_weight(float(decoded[-1]), len(contributors), self.cfg.spec,
                           self.cfg.ring.resolution, f"round {self.round_id}")
        return SumResult(weighted_sum=decoded[:-1], total_weight=float(decoded[-1]),
                         contributors=contributors)


_CONFIG = wire.Schema(kind=42, name="multiserver.config", fields=(
    *SPEC_FIELDS, F(16, "precision", T.FLOAT), F(17, "servers", T.UINT, max_uint=64),
    F(18, "rounding_seed", T.UINT, optional=True)))


def multiserver_client(config: bytes, secrets: object | None = None) -> _ClientProcess:
    """The multi-server sum's client side from its config message."""
    msg = wire.decode(config, _CONFIG)
    spec = spec_from_message(msg)
    precision, servers = msg.real("precision"), msg.uint("servers")
    if not precision > 0 or servers < 2:
        raise MalformedMessageError(f"bad precision {precision} or {servers} servers")
    try:
        ring = ring_for(spec, precision=precision)
    except (ConfigurationError, EncodingOverflowError) as exc:
        raise MalformedMessageError(f"no ring for the advertised spec: {exc}") from exc
    seed = msg.uint("rounding_seed") if "rounding_seed" in msg.values else None
    return _ClientProcess(_Config(spec, ring, servers, precision, seed))


class _ClientProcess:
    def __init__(self, cfg: _Config) -> None:
        self.cfg = cfg
        self.spec = cfg.spec

    def session(self, client: ClientId) -> ClientSession:
        return _Client(self.cfg, client)

    def restore(self, client: ClientId, state: bytes) -> ClientSession:
        if state:
            raise MalformedMessageError("the multi-server sum keeps no client state")
        return _Client(self.cfg, client)


class _Client:
    def __init__(self, cfg: _Config, client: ClientId) -> None:
        self.cfg = cfg
        self.me = client

    def export_state(self) -> bytes:
        """One exchange: nothing to keep."""
        return b""

    def step(self, request: bytes, contribution: ContributionLike | None) -> bytes:
        msg = wire.decode(request, _REQUEST)
        k = self.cfg.servers
        pks = msg.raw("server_pks")
        if len(pks) != 32 * k or msg.uint("length") != self.cfg.length:
            raise MalformedMessageError("request for another number of servers or length")
        x = weighted_input(self.cfg.spec, contribution, "multi-server")
        last = self.cfg.ring.encode(x, rounding_rng(self.cfg.rounding_seed, msg.round_id, self.me))
        scratch = np.empty_like(last)
        eph = X25519PrivateKey.generate()
        eph_pk = public_bytes(eph)
        sealed = []
        for i in range(k):
            shared = exchange(eph, pks[32 * i : 32 * (i + 1)], f"server {i}")
            aead = ChaCha20Poly1305(_key(shared, msg.round_id, self.me, i))
            if i < k - 1:
                seed = secrets.token_bytes(32)
                expand_mask(seed, len(last), last.dtype, purpose=_SHARE_PURPOSE,
                            round_id=msg.round_id, out=scratch)
                np.subtract(last, scratch, out=last)
                sealed.append(aead.encrypt(_nonce(i), seed, eph_pk))
            else:
                vector = aead.encrypt(_nonce(i), last.astype(last.dtype.newbyteorder("<"))
                                      .tobytes(), eph_pk)
        return wire.encode(_INPUT, msg.round_id, {"eph_pk": eph_pk,
                                                  "sealed_seeds": b"".join(sealed),
                                                  "sealed_vector": vector})


class _Process:
    def __init__(self, cfg: _Config) -> None:
        self.cfg = cfg
        self.spec = cfg.spec
        self._aggs = [_Aggregator(i) for i in range(cfg.servers)]

    def new_round(self, round_id: int, clients: Sequence[ClientId]) -> ServerSession:
        return _Server(self.cfg, self._aggs, round_id,
                       check_round_clients(round_id, clients, self.spec))

    def client_config(self) -> bytes:
        values = {**spec_values(self.cfg.spec), "precision": self.cfg.precision,
                  "servers": self.cfg.servers}
        if self.cfg.rounding_seed is not None:
            values["rounding_seed"] = self.cfg.rounding_seed
        return wire.encode(_CONFIG, 0, values)

    def client_session(self, client: ClientId) -> ClientSession:
        return multiserver_client(self.client_config()).session(client)


class MultiServerSecureSum:
    """Additive secret sharing among ``servers`` ≥ 2 non-colluding servers.

    Args:
        servers: k ≥ 2; privacy holds while at least one of them does not collude.
        precision: Resolution of the fixed-point encoding.
        rounding_seed: Seed of the rounding dither for bit-identical simulations (``None``:
            fresh).
    """

    def __init__(self, servers: int = 2, *, precision: float = 1e-6,
                 rounding_seed: int | None = None) -> None:
        require_int("servers", servers, minimum=2)
        self.servers = servers
        self.precision = precision
        self.rounding_seed = rounding_seed
        self.name = "multiserver"

    def create(self, spec: ValueSpec) -> _Process:
        """Derive the ring from ``spec`` (refusing a sum that could wrap)."""
        return _Process(_Config(spec, ring_for(spec, precision=self.precision), self.servers,
                                self.precision, self.rounding_seed))

    def trust_assumption(self) -> TrustAssumption:
        """What multi-server sharing protects, and what breaks it."""
        return TrustAssumption(
            mechanism=self.name, server_sees=Visibility.SHARES,
            statement=f"Each of {self.servers} servers sees one additive share of each update, "
                      "uniform over the ring, and the servers' sums give the total.",
            broken_by=f"all {self.servers} servers colluding",
            dropouts_tolerated="any number of clients (a missing client is in no sum); all "
                               "servers must answer")
