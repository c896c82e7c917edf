"""Single-server secure aggregation by pairwise masking (Bonawitz et al., CCS 2017; SecAgg+).

Four stages per round, as client and server state machines behind the ``SecureSum`` interface:

0. **Advertise keys.** Each client u makes two fresh X25519 key pairs (c for encrypting shares,
   s for mask agreement) and sends the public halves.
1. **Share keys.** The server tells u its neighbours' public keys (complete graph, or a random
   Harary graph for SecAgg+, :mod:`privfl.secagg.graph`). u draws a 256-bit self-mask seed bᵤ,
   Shamir-shares bᵤ and its s secret key t-of-m among its m holders (neighbours and itself),
   and sends each neighbour its pair of shares encrypted with ChaCha20-Poly1305 under
   HKDF-SHA256(X25519(c_skᵤ, c_pkᵥ)) (bound to round, sender and recipient), plus SHA-256(bᵤ).
2. **Masked input.** u receives the shares addressed to it, and uploads
   yᵤ = enc(wᵤxᵤ, wᵤ) + PRG(bᵤ) + Σᵥ ±PRG(sᵤᵥ) mod 2^b, where sᵤᵥ = HKDF(X25519(s_skᵤ, s_pkᵥ))
   for every neighbour v that completed stage 1 (+ if u < v, − otherwise), so pair masks cancel
   in the sum. Values are fixed-point with unbiased stochastic rounding (core.ring); masks
   are ChaCha20 keystreams of 256-bit secrets (:mod:`.prg`), uniform over the ring.
3. **Unmask.** For each surviving neighbour v, u reveals its share of bᵥ; for each neighbour
   that shared but did not upload, its share of s_skᵥ. A client never reveals both for the same
   peer: a request that asks for both gets a refusal. The server reconstructs, checks each
   reconstruction (SHA-256 commitment for bᵥ, public key for s_skᵥ), removes the self masks of
   the survivors and the dangling pair masks of the dropped, and decodes the sum.

Threat model: semi-honest server and clients. Individual inputs stay hidden unless t of a
client's m holders collude with the server. The sum is exact while every neighbourhood keeps
t holders alive (for the complete graph: up to n − t dropouts at any stage); otherwise the round
aborts with the counts. Dropouts before stage 2 cost nothing; after, they cost mask removals.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from privfl.core import wire
from privfl.core.ring import RingEncoding, ring_for
from privfl.core.securesum import (
    ClientSession,
    ServerSession,
    TrustAssumption,
    Visibility,
    check_round_clients,
)
from privfl.core.spec import ClientId, Contribution, SumResult, ValueSpec, weighted_input
from privfl.errors import (
    ClientRefusedError,
    MalformedMessageError,
    ProtocolAbortError,
    ProtocolViolationError,
)
from privfl.secagg import shamir
from privfl.secagg.graph import GraphPlan, harary_graph, plan_graph
from privfl.secagg.prg import PAIR_MASK, SELF_MASK, expand_mask

__all__ = ["PairwiseSecureSum", "UnmaskRefusedError"]

F, T = wire.Field, wire.FieldType
_IDS = "<u4"
_ADVERTISE = wire.Schema(kind=30, name="secagg.advertise", fields=(F(1, "stage", T.UINT),))
_KEYS = wire.Schema(kind=31, name="secagg.keys", fields=(
    F(1, "c_pk", T.BYTES), F(2, "s_pk", T.BYTES)))
_SHARE_REQ = wire.Schema(kind=32, name="secagg.share_request", fields=(
    F(1, "ids", T.ARRAY, dtype=_IDS), F(2, "c_pks", T.BYTES), F(3, "s_pks", T.BYTES),
    F(4, "threshold", T.UINT)))
_SHARES = wire.Schema(kind=33, name="secagg.shares", fields=(
    F(1, "ids", T.ARRAY, dtype=_IDS), F(2, "ciphertexts", T.BYTES), F(3, "b_commit", T.BYTES)))
_MASK_REQ = wire.Schema(kind=34, name="secagg.mask_request", fields=(
    F(1, "ids", T.ARRAY, dtype=_IDS), F(2, "ciphertexts", T.BYTES)))
_MASKED = {32: wire.Schema(kind=35, name="secagg.masked32", fields=(
    F(1, "y", T.ARRAY, dtype="<u4"),)),
    64: wire.Schema(kind=36, name="secagg.masked64", fields=(F(1, "y", T.ARRAY, dtype="<u8"),))}
_UNMASK_REQ = wire.Schema(kind=37, name="secagg.unmask_request", fields=(
    F(1, "survivors", T.ARRAY, dtype=_IDS), F(2, "dropped", T.ARRAY, dtype=_IDS)))
_UNMASK = wire.Schema(kind=38, name="secagg.unmask", fields=(
    F(1, "b_ids", T.ARRAY, dtype=_IDS), F(2, "b_shares", T.BYTES),
    F(3, "sk_ids", T.ARRAY, dtype=_IDS), F(4, "sk_shares", T.BYTES)))

_SHARE_PT = struct.Struct("<III")
_CT_BYTES = _SHARE_PT.size + 2 * shamir.SHARE_BYTES + 16
_AAD = b"privfl-secagg-share-v1"


class UnmaskRefusedError(ClientRefusedError):
    """A client refuses an unmask request that would reveal both secrets of one peer."""


def _kdf(shared: bytes, label: bytes, round_id: int) -> bytes:
    info = b"privfl-secagg-" + label + round_id.to_bytes(8, "little")
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(shared)


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def _commit(round_id: int, seed: bytes) -> bytes:
    return hashlib.sha256(b"privfl-secagg-b" + round_id.to_bytes(8, "little") + seed).digest()


def _ids(msg: wire.DecodedMessage, name: str) -> list[int]:
    ids = [int(v) for v in msg.array(name)]
    if ids != sorted(set(ids)):
        raise MalformedMessageError(f"`{name}` must be sorted and distinct")
    return ids


def _split(blob: bytes, size: int, count: int, what: str) -> list[bytes]:
    if len(blob) != size * count:
        raise MalformedMessageError(f"{what}: {len(blob)} bytes for {count} items of {size}")
    return [blob[i * size : (i + 1) * size] for i in range(count)]


@dataclass(frozen=True)
class _Config:
    spec: ValueSpec
    ring: RingEncoding
    sparse: bool
    dropout: float
    collusion: float

    @property
    def length(self) -> int:
        return self.spec.length + 1  # the weight slot


def _apply_pair_mask(acc: np.ndarray, seed: bytes, me: int, peer: int, round_id: int,
                     scratch: np.ndarray, *, remove: bool) -> None:
    """Acc ±= PRG(seed): + when me < peer (reversed when removing)."""
    expand_mask(seed, len(acc), acc.dtype, purpose=PAIR_MASK, round_id=round_id, out=scratch)
    if (me < peer) != remove:
        np.add(acc, scratch, out=acc)
    else:
        np.subtract(acc, scratch, out=acc)


class _Client:
    """One client's side of one round."""

    def __init__(self, cfg: _Config, client: ClientId) -> None:
        self.cfg = cfg
        self.me = client
        self.stage = 0
        self.round_id = -1
        self.c_sk = X25519PrivateKey.generate()
        self.s_sk = X25519PrivateKey.generate()
        self.b_seed = secrets.token_bytes(32)
        self.rng = np.random.default_rng(secrets.randbits(128))  # rounding noise only
        self.s_pks: dict[int, bytes] = {}
        self.c_pks: dict[int, bytes] = {}
        self.own_shares: tuple[bytes, bytes] = (b"", b"")
        self.received: dict[int, tuple[bytes, bytes]] = {}

    def _expect(self, kind: int, stage: int, request: bytes) -> wire.DecodedMessage:
        schema = {0: _ADVERTISE, 1: _SHARE_REQ, 2: _MASK_REQ, 3: _UNMASK_REQ}.get(stage)
        if schema is None:
            raise ProtocolViolationError(f"client {self.me}: the round is over for this client")
        if kind != schema.kind:
            raise ProtocolViolationError(
                f"client {self.me}: got message kind {kind} at stage {stage}")
        msg = wire.decode(request, schema)
        if stage > 0 and msg.round_id != self.round_id:
            raise ProtocolViolationError(f"client {self.me}: request for round {msg.round_id}")
        return msg

    def step(self, request: bytes, contribution: Contribution | None) -> bytes:
        msg = self._expect(wire.peek_kind(request), self.stage, request)
        stage = self.stage
        self.stage += 1
        if stage == 0:
            self.round_id = msg.round_id
            return wire.encode(_KEYS, self.round_id, {"c_pk": _raw_public(self.c_sk),
                                                      "s_pk": _raw_public(self.s_sk)})
        if stage == 1:
            return self._share(msg)
        if stage == 2:
            return self._mask(msg, contribution)
        return self._unmask(msg)

    def _share(self, msg: wire.DecodedMessage) -> bytes:
        ids = _ids(msg, "ids")
        t = msg.uint("threshold")
        m = len(ids) + 1
        if self.me in ids or not ids:
            raise MalformedMessageError("neighbour list is empty or contains the client")
        if not m // 2 + 1 <= t <= m:
            raise ClientRefusedError(
                f"client {self.me}: threshold {t} of {m} holders is unsafe (needs > {m // 2}).")
        c_pks = _split(msg.raw("c_pks"), 32, len(ids), "c_pks")
        s_pks = _split(msg.raw("s_pks"), 32, len(ids), "s_pks")
        self.c_pks = dict(zip(ids, c_pks, strict=True))
        self.s_pks = dict(zip(ids, s_pks, strict=True))
        xs = [v + 1 for v in [*ids, self.me]]
        b_sh = shamir.share(self.b_seed, xs, t)
        sk_sh = shamir.share(_raw_private(self.s_sk), xs, t)
        self.own_shares = (b_sh[self.me + 1], sk_sh[self.me + 1])
        cts = []
        for v in ids:
            key = _kdf(self.c_sk.exchange(X25519PublicKey.from_public_bytes(self.c_pks[v])),
                       b"share", self.round_id)
            head = _SHARE_PT.pack(self.round_id, self.me, v)
            cts.append(ChaCha20Poly1305(key).encrypt(head, head + b_sh[v + 1] + sk_sh[v + 1],
                                                     _AAD))
        return wire.encode(_SHARES, self.round_id, {
            "ids": np.asarray(ids, dtype=_IDS), "ciphertexts": b"".join(cts),
            "b_commit": _commit(self.round_id, self.b_seed)})

    def _mask(self, msg: wire.DecodedMessage, contribution: Contribution | None) -> bytes:
        ids = _ids(msg, "ids")
        if not set(ids) <= set(self.c_pks):
            raise MalformedMessageError("shares from clients that are not neighbours")
        cts = _split(msg.raw("ciphertexts"), _CT_BYTES, len(ids), "ciphertexts")
        for v, ct in zip(ids, cts, strict=True):
            key = _kdf(self.c_sk.exchange(X25519PublicKey.from_public_bytes(self.c_pks[v])),
                       b"share", self.round_id)
            head = _SHARE_PT.pack(self.round_id, v, self.me)
            try:
                pt = ChaCha20Poly1305(key).decrypt(head, ct, _AAD)
            except InvalidTag as exc:
                raise MalformedMessageError(
                    f"client {self.me}: the share from client {v} fails authentication") from exc
            if pt[: _SHARE_PT.size] != head:
                raise MalformedMessageError(f"share from {v} is bound to another message")
            body = pt[_SHARE_PT.size:]
            self.received[v] = (body[: shamir.SHARE_BYTES], body[shamir.SHARE_BYTES:])
        x = weighted_input(self.cfg.spec, contribution, "pairwise masking")
        y = self.cfg.ring.encode(x, self.rng)
        scratch = np.empty_like(y)
        expand_mask(self.b_seed, len(y), y.dtype, purpose=SELF_MASK, round_id=self.round_id,
                    out=scratch)
        np.add(y, scratch, out=y)
        for v in ids:
            seed = _kdf(self.s_sk.exchange(X25519PublicKey.from_public_bytes(self.s_pks[v])),
                        b"mask", self.round_id)
            _apply_pair_mask(y, seed, self.me, v, self.round_id, scratch, remove=False)
        self.mask_peers = set(ids)
        return wire.encode(_MASKED[self.cfg.ring.bits], self.round_id, {"y": y})

    def _unmask(self, msg: wire.DecodedMessage) -> bytes:
        survivors = _ids(msg, "survivors")
        dropped = _ids(msg, "dropped")
        both = set(survivors) & set(dropped)
        if both or self.me in dropped:
            raise UnmaskRefusedError(
                f"client {self.me} refuses to unmask: the server asked for both the self-mask "
                f"and the key share of {sorted(both | ({self.me} & set(dropped)))}.")
        known = set(self.received) | {self.me}
        if not (set(survivors) | set(dropped)) <= known:
            raise MalformedMessageError("unmask request names clients whose shares I lack")
        def share_of(v: int, which: int) -> bytes:
            return self.own_shares[which] if v == self.me else self.received[v][which]
        return wire.encode(_UNMASK, self.round_id, {
            "b_ids": np.asarray(survivors, dtype=_IDS),
            "b_shares": b"".join(share_of(v, 0) for v in survivors),
            "sk_ids": np.asarray(dropped, dtype=_IDS),
            "sk_shares": b"".join(share_of(v, 1) for v in dropped)})


class _Server:
    """The server's side of one round."""

    def __init__(self, cfg: _Config, round_id: int, clients: Sequence[ClientId]) -> None:
        self.cfg = cfg
        self.round_id = round_id
        self.selected = frozenset(clients)
        self.plan: GraphPlan = plan_graph(len(clients), sparse=cfg.sparse,
                                          dropout=cfg.dropout, collusion=cfg.collusion)
        self.stage = 0
        self.keys: dict[int, tuple[bytes, bytes]] = {}
        self.graph: dict[int, tuple[int, ...]] = {}
        self.shares_in: dict[int, dict[int, bytes]] = {}  # recipient -> sender -> ciphertext
        self.commits: dict[int, bytes] = {}
        self.u2: set[int] = set()
        self.u3: set[int] = set()
        self.acc = np.zeros(cfg.length, dtype=cfg.ring.dtype)
        self.unmask_from: set[int] = set()
        self.b_shares: dict[int, dict[int, bytes]] = {}
        self.sk_shares: dict[int, dict[int, bytes]] = {}
        self.requested: dict[int, tuple[list[int], list[int]]] = {}

    # --- receiving ---------------------------------------------------------------------------
    def _check(self, client: ClientId, message: bytes, schema: wire.Schema,
               allowed: Iterable[int], seen: Iterable[int]) -> wire.DecodedMessage:
        if client not in self.selected:
            raise ProtocolViolationError(f"round {self.round_id}: client {client} not selected")
        if client not in set(allowed):
            raise ProtocolViolationError(
                f"round {self.round_id}: client {client} is not part of stage {self.stage}")
        if client in set(seen):
            raise ProtocolViolationError(f"round {self.round_id}: duplicate from {client}")
        msg = wire.decode(message, schema)
        if msg.round_id != self.round_id:
            raise ProtocolViolationError(
                f"client {client}: message for round {msg.round_id}, expected {self.round_id}")
        return msg

    def receive(self, client: ClientId, message: bytes) -> None:
        if self.stage == 1:
            msg = self._check(client, message, _KEYS, self.selected, self.keys)
            c_pk, s_pk = msg.raw("c_pk"), msg.raw("s_pk")
            if len(c_pk) != 32 or len(s_pk) != 32 or c_pk == s_pk:
                raise MalformedMessageError("public keys must be two distinct 32-byte keys")
            self.keys[client] = (c_pk, s_pk)
        elif self.stage == 2:
            msg = self._check(client, message, _SHARES, self.graph, self.u2)
            ids = _ids(msg, "ids")
            if ids != list(self.graph[client]):
                raise MalformedMessageError("shares for the wrong neighbours")
            cts = _split(msg.raw("ciphertexts"), _CT_BYTES, len(ids), "ciphertexts")
            commit = msg.raw("b_commit")
            if len(commit) != 32:
                raise MalformedMessageError("commitment must be 32 bytes")
            for v, ct in zip(ids, cts, strict=True):
                self.shares_in.setdefault(v, {})[client] = ct
            self.commits[client] = commit
            self.u2.add(client)
        elif self.stage == 3:
            msg = self._check(client, message, _MASKED[self.cfg.ring.bits], self.u2, self.u3)
            y = msg.array("y")
            if y.shape != (self.cfg.length,):
                raise MalformedMessageError(f"masked vector of shape {y.shape}, expected "
                                            f"({self.cfg.length},)")
            np.add(self.acc, y, out=self.acc)  # mod 2^b; validated above
            self.u3.add(client)
        elif self.stage == 4:
            msg = self._check(client, message, _UNMASK, self.requested, self.unmask_from)
            want_b, want_sk = self.requested[client]
            if _ids(msg, "b_ids") != want_b or _ids(msg, "sk_ids") != want_sk:
                raise MalformedMessageError("unmask reply for other clients than requested")
            b = _split(msg.raw("b_shares"), shamir.SHARE_BYTES, len(want_b), "b_shares")
            sk = _split(msg.raw("sk_shares"), shamir.SHARE_BYTES, len(want_sk), "sk_shares")
            for v, s in zip(want_b, b, strict=True):
                self.b_shares.setdefault(v, {})[client + 1] = s
            for v, s in zip(want_sk, sk, strict=True):
                self.sk_shares.setdefault(v, {})[client + 1] = s
            self.unmask_from.add(client)
        else:
            raise ProtocolViolationError(f"round {self.round_id}: not accepting messages now")

    # --- stages ---------------------------------------------------------------------------------
    def _need(self, alive: int, what: str) -> None:
        if alive < self.plan.threshold:
            raise ProtocolAbortError(
                f"round {self.round_id}: {alive} of {len(self.selected)} clients survived "
                f"{what}; the threshold needs {self.plan.threshold}.")

    def step(self, replies: Iterable[tuple[ClientId, bytes]]
             ) -> Mapping[ClientId, bytes] | SumResult:
        for client, message in replies:
            self.receive(client, message)
        self.stage += 1
        if self.stage == 1:
            req = wire.encode(_ADVERTISE, self.round_id, {"stage": 0})
            return {c: req for c in sorted(self.selected)}
        if self.stage == 2:
            return self._share_requests()
        if self.stage == 3:
            self._need(len(self.u2), "key sharing")
            out = {}
            for u in sorted(self.u2):
                senders = [v for v in sorted(self.shares_in.get(u, {})) if v in self.u2]
                out[u] = wire.encode(_MASK_REQ, self.round_id, {
                    "ids": np.asarray(senders, dtype=_IDS),
                    "ciphertexts": b"".join(self.shares_in[u][v] for v in senders)})
            return out
        if self.stage == 4:
            self._need(len(self.u3), "the upload")
            out = {}
            dropped_all = self.u2 - self.u3
            for u in sorted(self.u3):
                nbrs = set(self.graph[u]) & self.u2
                survivors = sorted((nbrs & self.u3) | {u})
                dropped = sorted(nbrs & dropped_all)
                self.requested[u] = (survivors, dropped)
                out[u] = wire.encode(_UNMASK_REQ, self.round_id, {
                    "survivors": np.asarray(survivors, dtype=_IDS),
                    "dropped": np.asarray(dropped, dtype=_IDS)})
            return out
        if self.stage == 5:
            return self._finish()
        raise ProtocolViolationError(f"round {self.round_id} is finished")

    def _share_requests(self) -> dict[ClientId, bytes]:
        alive = sorted(self.keys)
        self._need(len(alive), "key advertisement")
        self.graph = harary_graph(alive, min(self.plan.degree, len(alive) - 1))
        threshold = self.plan.threshold
        out = {}
        for u in alive:
            nbrs = self.graph[u]
            if len(nbrs) + 1 < threshold:
                raise ProtocolAbortError(f"round {self.round_id}: client {u} has only "
                                         f"{len(nbrs)} neighbours; threshold {threshold}.")
            out[u] = wire.encode(_SHARE_REQ, self.round_id, {
                "ids": np.asarray(nbrs, dtype=_IDS),
                "c_pks": b"".join(self.keys[v][0] for v in nbrs),
                "s_pks": b"".join(self.keys[v][1] for v in nbrs),
                "threshold": threshold})
        return out

    def _finish(self) -> SumResult:
        t = self.plan.threshold
        acc = self.acc
        scratch = np.empty_like(acc)
        for u in sorted(self.u3):
            shares = self.b_shares.get(u, {})
            if len(shares) < t:
                raise ProtocolAbortError(
                    f"round {self.round_id}: {len(shares)} holders returned shares of client "
                    f"{u}'s self mask; {t} are needed.")
            seed = shamir.reconstruct(shares, t)
            if _commit(self.round_id, seed) != self.commits[u]:
                raise ProtocolAbortError(f"round {self.round_id}: the shares of client {u}'s "
                                         "self mask are inconsistent with its commitment.")
            expand_mask(seed, len(acc), acc.dtype, purpose=SELF_MASK, round_id=self.round_id,
                        out=scratch)
            np.subtract(acc, scratch, out=acc)
        for v in sorted(self.u2 - self.u3):
            shares = self.sk_shares.get(v, {})
            if len(shares) < t:
                raise ProtocolAbortError(
                    f"round {self.round_id}: {len(shares)} holders returned shares of dropped "
                    f"client {v}'s key; {t} are needed.")
            sk = X25519PrivateKey.from_private_bytes(shamir.reconstruct(shares, t))
            if _raw_public(sk) != self.keys[v][1]:
                raise ProtocolAbortError(f"round {self.round_id}: the key shares of client {v} "
                                         "do not match its advertised key.")
            for u in sorted(set(self.graph[v]) & self.u3):
                seed = _kdf(sk.exchange(X25519PublicKey.from_public_bytes(self.keys[u][1])),
                            b"mask", self.round_id)
                _apply_pair_mask(acc, seed, u, v, self.round_id, scratch, remove=True)
        total = self.cfg.ring.decode(acc)
        self.stage = 6
        return SumResult(weighted_sum=total[:-1], total_weight=float(total[-1]),
                         contributors=tuple(sorted(self.u3)))


class _Process:
    def __init__(self, cfg: _Config) -> None:
        self.cfg = cfg
        self.spec = cfg.spec

    def new_round(self, round_id: int, clients: Sequence[ClientId]) -> ServerSession:
        return _Server(self.cfg, round_id, check_round_clients(round_id, clients, self.spec))

    def client_session(self, client: ClientId) -> ClientSession:
        return _Client(self.cfg, client)


class PairwiseSecureSum:
    """SecAgg (complete graph) or SecAgg+ (sparse random graph) pairwise masking.

    Args:
        sparse: SecAgg+ neighbourhoods of O(log n) instead of the complete graph.
        dropout_rate: δ, the fraction of each neighbourhood that may drop (< 0.5).
        collusion_fraction: γ, the fraction of a client's holders that may collude with the
            server without revealing its input.
        precision: Resolution of the fixed-point encoding (the ring and scale are derived).
    """

    def __init__(self, *, sparse: bool = False, dropout_rate: float = 0.2,
                 collusion_fraction: float = 1 / 3, precision: float = 1e-6) -> None:
        plan_graph(3, sparse=sparse, dropout=dropout_rate, collusion=collusion_fraction)
        self.sparse = sparse
        self.dropout_rate = dropout_rate
        self.collusion_fraction = collusion_fraction
        self.precision = precision
        self.name = "secagg+" if sparse else "secagg"

    def create(self, spec: ValueSpec) -> _Process:
        """Derive the ring from ``spec`` (refusing a sum that could wrap)."""
        ring = ring_for(spec, precision=self.precision)
        return _Process(_Config(spec, ring, self.sparse, self.dropout_rate,
                                self.collusion_fraction))

    def plan(self, n: int) -> GraphPlan:
        """The neighbourhood size and threshold used for ``n`` selected clients."""
        return plan_graph(n, sparse=self.sparse, dropout=self.dropout_rate,
                          collusion=self.collusion_fraction)

    def trust_assumption(self) -> TrustAssumption:
        """What pairwise masking protects, and what breaks it."""
        graph = ("a random Harary graph with O(log n) neighbours (SecAgg+)" if self.sparse
                 else "the complete graph (SecAgg)")
        return TrustAssumption(
            mechanism=self.name, server_sees=Visibility.MASKED,
            statement=f"The server sees only masked inputs, uniform over the ring, and the "
                      f"sum; masks over {graph}, secrets Shamir-shared t-of-m among each "
                      "client's holders (m = neighbours + 1, t > m/2). Semi-honest server.",
            broken_by=f"t or more of a client's m holders colluding with the server "
                      f"(t = max(floor({self.collusion_fraction:.2g}·m) + 1, floor(m/2) + 1))",
            dropouts_tolerated=f"up to m - t holders of each neighbourhood at any stage "
                               f"(sized for a dropout rate of {self.dropout_rate:g}); more "
                               "aborts the round")
