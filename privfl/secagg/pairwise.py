"""Single-server secure aggregation by pairwise masking (Bonawitz et al., CCS 2017; SecAgg+).

Four stages per round, as client and server state machines behind the ``SecureSum`` interface:

0. **Advertise keys.** Each client u makes two fresh X25519 key pairs (c for encrypting shares,
   s for mask agreement) and sends the public halves. The server rejects a key that is not a
   valid point of large order (:mod:`.keyagreement`): that client is excluded, nobody crashes.
1. **Share keys.** The server tells u its neighbours' public keys (complete graph, or a random
   Harary graph for SecAgg+, :mod:`privfl.secagg.graph`). u draws a 256-bit self-mask seed bᵤ,
   Shamir-shares bᵤ and its s secret key t-of-m among its m holders (neighbours and itself),
   and sends each neighbour its pair of shares encrypted with ChaCha20-Poly1305 under
   HKDF-SHA256(X25519(c_skᵤ, c_pkᵥ)) (bound to round, sender and recipient), plus SHA-256(bᵤ).
   Each encrypted share also carries a **key-confirmation transcript**: SHA-256 of both
   clients' four public keys as u sees them (its own, and v's as relayed).
2. **Masked input.** u decrypts the shares addressed to it and *confirms* each sender v: the
   ciphertext authenticates and v's transcript equals u's own view of the two key pairs. A
   confirmed key pair means X25519(s_skᵤ, s_pkᵥ) = X25519(s_skᵥ, s_pkᵤ), so the pair mask will
   cancel. u uploads yᵤ = enc(wᵤxᵤ, wᵤ) + PRG(bᵤ) + Σᵥ ±PRG(sᵤᵥ) mod 2^b over its confirmed
   peers v (+ if u < v), and lists them. A key relayed wrongly (a flipped byte) is detected on
   both sides of the pair, so both leave the pair mask out and the sum stays exact; u refuses to
   upload if fewer than t − 1 peers confirm (Bonawitz's |U₂| ≥ t). Values are fixed-point with
   unbiased stochastic rounding (core.ring); masks are ChaCha20 keystreams of 256-bit secrets
   (:mod:`.prg`), uniform over the ring.
3. **Unmask.** For each surviving confirmed peer v, u reveals its share of bᵥ; for each
   confirmed peer that shared but did not upload, its share of s_skᵥ. A client never reveals
   both for the same peer (a request that asks for both gets a refusal). If a ciphertext was
   corrupted on its way to u only, u left out a pair mask that its peer v put in; the server
   sees the asymmetry in the listed peers and asks u for that one pair seed — what it would
   learn anyway had u dropped — and u reveals it only for a peer it did not mask with. The
   server reconstructs, checks each reconstruction (SHA-256 commitment for bᵥ, public key for
   s_skᵥ), removes the self masks of the survivors and the dangling pair masks, and decodes.
   A decoded total weight outside (0, contributors·max_weight] aborts the round.

Threat model (default): a semi-honest server colluding with at most a fraction γ of the
selected clients; k and t are derived from n, γ, δ, σ and η (:mod:`.params`), and every client
derives them too and refuses a request that does not fit them. The sum is exact while every
client keeps t surviving neighbours; otherwise the round aborts with the counts. Dropouts
before stage 2 cost nothing; after, they cost mask removals.

Malicious-server mode (``identities=``, Bonawitz et al.'s active variant): clients sign their
keys with pinned Ed25519 identities (:mod:`.identity`) and, for SecAgg+, commit to a nonce with
them; a *reveal* exchange opens the nonces once the committed list U₁ is fixed and the graph is
derived from all of them (the server cannot choose it); after the upload a *consistency*
exchange has every uploader sign the one survivor list U₃ it accepts, and a client unmasks only
with t of its holders' signatures on the same list and only as that list says. t satisfies
2t > k + 1 + ⌊γn⌋ and k > ⌊γn⌋ + ⌊δn⌋. Any deviation a client can see raises
:class:`InconsistentServerError` before it reveals anything.
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

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
    ClientRefusedError,
    ConfigurationError,
    EncodingOverflowError,
    MalformedMessageError,
    ProtocolAbortError,
    ProtocolViolationError,
)
from privfl.secagg import shamir
from privfl.secagg.graph import harary_graph, harary_rows, plan_graph
from privfl.secagg.identity import IdentityBook, IdentityRegistry
from privfl.secagg.keyagreement import (
    check_public,
    exchange,
    hkdf,
    private_bytes,
    public_bytes,
)
from privfl.secagg.params import SecAggParams, ServerModel, check_assumptions
from privfl.secagg.prg import PAIR_MASK, SELF_MASK, expand_mask
from privfl.secagg.unmask import MaskOp, Unmasker

__all__ = ["InconsistentServerError", "PairwiseSecureSum", "UnmaskRefusedError"]

F, T = wire.Field, wire.FieldType
_IDS = "<u4"
_ADVERTISE = wire.Schema(kind=30, name="secagg.advertise", fields=(F(1, "stage", T.UINT),))
_KEYS = wire.Schema(kind=31, name="secagg.keys", fields=(
    F(1, "c_pk", T.BYTES), F(2, "s_pk", T.BYTES), F(3, "sig", T.BYTES, optional=True),
    F(4, "nonce_commit", T.BYTES, optional=True)))
_REVEAL_REQ = wire.Schema(kind=25, name="secagg.reveal_request", fields=(
    F(1, "u1", T.ARRAY, dtype=_IDS), F(2, "commits", T.BYTES)))
_REVEAL = wire.Schema(kind=26, name="secagg.reveal", fields=(F(1, "nonce", T.BYTES),))
_SHARE_REQ = wire.Schema(kind=32, name="secagg.share_request", fields=(
    F(1, "ids", T.ARRAY, dtype=_IDS), F(2, "c_pks", T.BYTES), F(3, "s_pks", T.BYTES),
    F(4, "threshold", T.UINT), F(5, "selected", T.UINT),
    F(6, "sigs", T.BYTES, optional=True), F(7, "u1", T.ARRAY, dtype=_IDS, optional=True),
    F(8, "nonces", T.BYTES, optional=True)))
_SHARES = wire.Schema(kind=33, name="secagg.shares", fields=(
    F(1, "ids", T.ARRAY, dtype=_IDS), F(2, "ciphertexts", T.BYTES), F(3, "b_commit", T.BYTES)))
_MASK_REQ = wire.Schema(kind=34, name="secagg.mask_request", fields=(
    F(1, "ids", T.ARRAY, dtype=_IDS), F(2, "ciphertexts", T.BYTES)))
_MASKED = {32: wire.Schema(kind=35, name="secagg.masked32", fields=(
    F(1, "y", T.ARRAY, dtype="<u4"), F(2, "mask_peers", T.ARRAY, dtype=_IDS))),
    64: wire.Schema(kind=36, name="secagg.masked64", fields=(
        F(1, "y", T.ARRAY, dtype="<u8"), F(2, "mask_peers", T.ARRAY, dtype=_IDS)))}
_UNMASK_REQ = wire.Schema(kind=37, name="secagg.unmask_request", fields=(
    F(1, "survivors", T.ARRAY, dtype=_IDS), F(2, "dropped", T.ARRAY, dtype=_IDS),
    F(3, "pair_seeds", T.ARRAY, dtype=_IDS), F(4, "signers", T.ARRAY, dtype=_IDS, optional=True),
    F(5, "sigs", T.BYTES, optional=True)))
_CONS_REQ = wire.Schema(kind=27, name="secagg.consistency_request", fields=(
    F(1, "u3", T.ARRAY, dtype=_IDS),))
_CONS = wire.Schema(kind=28, name="secagg.consistency", fields=(F(1, "sig", T.BYTES),))
_UNMASK = wire.Schema(kind=38, name="secagg.unmask", fields=(
    F(1, "b_ids", T.ARRAY, dtype=_IDS), F(2, "b_shares", T.BYTES),
    F(3, "sk_ids", T.ARRAY, dtype=_IDS), F(4, "sk_shares", T.BYTES),
    F(5, "seed_ids", T.ARRAY, dtype=_IDS), F(6, "seeds", T.BYTES)))

_SHARE_PT = struct.Struct("<III")
_TRANSCRIPT_BYTES = 32
_CT_BYTES = _SHARE_PT.size + 2 * shamir.SHARE_BYTES + _TRANSCRIPT_BYTES + 16
_AAD = b"privfl-secagg-share-v2"

Keys = tuple[bytes, bytes]  # (c_pk, s_pk)


class UnmaskRefusedError(ClientRefusedError):
    """A client refuses an unmask request that would reveal what must stay secret."""


class InconsistentServerError(ProtocolAbortError):
    """A client caught the server relaying keys or survivor lists that their owners never signed.

    Raised in the malicious-server mode: the client stops the round before revealing anything.
    """


def _key_statement(round_id: int, client: int, keys: Keys, commit: bytes = b"") -> bytes:
    return (b"privfl-secagg-keys-signed-v1" + struct.pack("<QI", round_id, client)
            + keys[0] + keys[1] + commit)


def _nonce_commit(round_id: int, client: int, nonce: bytes) -> bytes:
    return hashlib.sha256(b"privfl-secagg-nonce" + struct.pack("<QI", round_id, client)
                          + nonce).digest()


def _graph_seed(round_id: int, u1: Sequence[int], nonces: bytes) -> bytes:
    """The graph's randomness: every client of U₁ contributed a committed nonce."""
    return hashlib.sha256(b"privfl-secagg-graph" + struct.pack("<Q", round_id)
                          + _id_array(u1).tobytes() + nonces).digest()


def _survivor_statement(round_id: int, u1_digest: bytes, u3: Sequence[int]) -> bytes:
    return (b"privfl-secagg-u3-v1" + struct.pack("<Q", round_id) + u1_digest
            + np.asarray(sorted(u3), dtype=_IDS).tobytes())


def _digest(ids: Iterable[int], commits: bytes = b"") -> bytes:
    return hashlib.sha256(b"privfl-secagg-u1" + _id_array(ids).tobytes() + commits).digest()


def _kdf(shared: bytes, label: bytes, round_id: int) -> bytes:
    return hkdf(shared, b"privfl-secagg-" + label + round_id.to_bytes(8, "little"))


def _pair_seed_batches(batches: list[tuple[bytes, bytes, list[int], int]]) -> list[bytes]:
    """:func:`_pair_seeds` over batches packed as (keys, public keys, peers, round)."""
    out: list[bytes] = []
    for sks, pks, peers, round_id in batches:
        out += _pair_seeds([(sks[32 * i:32 * i + 32], pks[32 * i:32 * i + 32], p, round_id)
                            for i, p in enumerate(peers)])
    return out


def _pair_seeds(items: list[tuple[bytes, bytes, int, int]]) -> list[bytes]:
    """Pair-mask seeds of a dropped client (its reconstructed key) with surviving neighbours.

    Module-level and data in, data out: it may run in the server's worker processes.
    """
    out = []
    last: tuple[bytes, X25519PrivateKey] | None = None
    peers: dict[bytes, X25519PublicKey] = {}  # a survivor neighbours many dropped clients
    for sk_raw, peer_pk, peer, round_id in items:  # grouped by dropped client: one key each
        if last is None or last[0] != sk_raw:
            last = (sk_raw, X25519PrivateKey.from_private_bytes(sk_raw))
        pk = peers.get(peer_pk)
        if pk is None:
            if len(peer_pk) != 32:
                raise MalformedMessageError(f"client {peer}'s s_pk is not 32 bytes")
            pk = peers[peer_pk] = X25519PublicKey.from_public_bytes(peer_pk)
        try:
            shared = last[1].exchange(pk)
        except ValueError as exc:
            raise MalformedMessageError(f"client {peer}'s s_pk is a low-order point") from exc
        out.append(_kdf(shared, b"mask", round_id))
    return out


def _reconstruct_chunk(items: list[tuple[list[Hashable], np.ndarray, np.ndarray]]
                       ) -> list[tuple[Hashable, bytes]]:
    """Shamir reconstruction of slices of a round's share table (may run in a worker process).

    Each item is (keys, xs, ys) for a slice of secrets: a few arrays cross the process
    boundary, not one object per secret.
    """
    out: list[tuple[Hashable, bytes]] = []
    for keys, xs, ys in items:
        out += list(shamir.interpolate(keys, xs, ys).items())
    return out


def _slices(count: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, count))
    edges = [round(i * count / parts) for i in range(parts + 1)]
    return [(a, b) for a, b in zip(edges, edges[1:], strict=False) if a < b]


def _rows(blob: bytes, count: int, what: str) -> np.ndarray:
    """``count`` Shamir shares as a (count, 9) array of u32 limbs."""
    if len(blob) != shamir.SHARE_BYTES * count:
        raise MalformedMessageError(f"{what}: {len(blob)} bytes for {count} shares of "
                                    f"{shamir.SHARE_BYTES}")
    return np.frombuffer(blob, dtype="<u4").reshape(count, shamir.LIMBS)


def _offsets(groups: Iterable[Sequence[Any]]) -> list[int]:
    starts, total = [], 0
    for g in groups:
        starts.append(total)
        total += len(g)
    return starts


def _commit(round_id: int, seed: bytes) -> bytes:
    return hashlib.sha256(b"privfl-secagg-b" + round_id.to_bytes(8, "little") + seed).digest()


def _transcript(round_id: int, a: int, keys_a: Keys, b: int, keys_b: Keys) -> bytes:
    """SHA-256 of a pair's public keys, in id order: equal on both sides iff the views agree."""
    (lo, k_lo), (hi, k_hi) = sorted(((a, keys_a), (b, keys_b)))
    return hashlib.sha256(b"privfl-secagg-keys-v1" + struct.pack("<QII", round_id, lo, hi)
                          + k_lo[0] + k_lo[1] + k_hi[0] + k_hi[1]).digest()


def _ids(msg: wire.DecodedMessage, name: str) -> list[int]:
    arr = np.asarray(msg.array(name))
    if arr.ndim != 1 or (len(arr) > 1 and not bool((arr[1:] > arr[:-1]).all())):
        raise MalformedMessageError(f"`{name}` must be sorted and distinct")
    ids: list[int] = arr.tolist()
    return ids


def _split(blob: bytes, size: int, count: int, what: str) -> list[bytes]:
    if len(blob) != size * count:
        raise MalformedMessageError(f"{what}: {len(blob)} bytes for {count} items of {size}")
    return [blob[i * size : (i + 1) * size] for i in range(count)]


def _id_array(ids: Iterable[int]) -> np.ndarray:
    return np.asarray(sorted(ids), dtype=_IDS)


@dataclass(frozen=True)
class _Config:
    spec: ValueSpec
    ring: RingEncoding
    sparse: bool
    dropout: float
    collusion: float
    precision: float
    rounding_seed: int | None = None
    security: int = 40
    correctness: int = 20
    malicious: bool = False

    @property
    def reveal(self) -> bool:
        """Malicious SecAgg+: the graph comes from the clients' committed nonces."""
        return self.malicious and self.sparse

    def plan(self, n: int) -> SecAggParams:
        """K and t for ``n`` selected clients (raises ConfigurationError)."""
        return plan_graph(n, sparse=self.sparse, dropout=self.dropout, collusion=self.collusion,
                          security=self.security, correctness=self.correctness,
                          model=ServerModel.MALICIOUS if self.malicious
                          else ServerModel.SEMI_HONEST)

    @property
    def length(self) -> int:
        return self.spec.length + 1  # the weight slot


_CONFIG = wire.Schema(kind=39, name="secagg.config", fields=(
    *SPEC_FIELDS, F(16, "precision", T.FLOAT), F(17, "rounding_seed", T.UINT, optional=True),
    F(18, "sparse", T.UINT), F(19, "collusion", T.FLOAT), F(20, "dropout", T.FLOAT),
    F(21, "security", T.UINT), F(22, "correctness", T.UINT), F(23, "malicious", T.UINT)))
_STATE = wire.Schema(kind=29, name="secagg.client_state", fields=(
    F(1, "stage", T.UINT), F(2, "threshold", T.UINT), F(3, "keys", T.BYTES),
    F(4, "b_seed", T.BYTES), F(5, "peer_ids", T.ARRAY, dtype=_IDS), F(6, "peer_keys", T.BYTES),
    F(7, "own_shares", T.BYTES), F(8, "received_ids", T.ARRAY, dtype=_IDS),
    F(9, "received", T.BYTES), F(10, "rejected", T.ARRAY, dtype=_IDS),
    F(11, "u1_digest", T.BYTES, optional=True), F(12, "u3", T.ARRAY, dtype=_IDS, optional=True),
    F(13, "selected", T.UINT, optional=True), F(14, "nonce", T.BYTES, optional=True),
    F(15, "commit_ids", T.ARRAY, dtype=_IDS, optional=True),
    F(16, "commits", T.BYTES, optional=True)))


def _config_message(cfg: _Config) -> bytes:
    values = {**spec_values(cfg.spec), "precision": cfg.precision, "sparse": int(cfg.sparse),
              "collusion": cfg.collusion, "dropout": cfg.dropout, "security": cfg.security,
              "correctness": cfg.correctness, "malicious": int(cfg.malicious)}
    if cfg.rounding_seed is not None:
        values["rounding_seed"] = cfg.rounding_seed
    return wire.encode(_CONFIG, 0, values)


def pairwise_client(config: bytes, secrets: object | None = None) -> _ClientProcess:
    """The pairwise sum's client side from its config message (the graph arrives per round)."""
    msg = wire.decode(config, _CONFIG)
    spec = spec_from_message(msg)
    precision = msg.real("precision")
    if not precision > 0:
        raise MalformedMessageError(f"precision must be > 0. Found {precision}.")
    seed = msg.uint("rounding_seed") if "rounding_seed" in msg.values else None
    sparse, security, correctness = msg.uint("sparse"), msg.uint("security"), \
        msg.uint("correctness")
    collusion, dropout = msg.real("collusion"), msg.real("dropout")
    malicious = msg.uint("malicious")
    try:
        ring = ring_for(spec, precision=precision)
        if sparse not in (0, 1) or malicious not in (0, 1):
            raise ConfigurationError(f"sparse and malicious must be 0 or 1. Found {sparse}, "
                                     f"{malicious}.")
        check_assumptions(collusion, dropout, security, correctness)
    except (ConfigurationError, EncodingOverflowError) as exc:
        raise MalformedMessageError(f"unusable secagg configuration: {exc}") from exc
    book = secrets if isinstance(secrets, IdentityBook) else None
    if book is not None and not malicious:
        # identities pinned on this client: a server cannot downgrade it to the semi-honest mode
        raise ClientRefusedError("this client is provisioned for the malicious-server mode; the "
                                 "server offered the semi-honest one. Refusing.")
    if malicious and book is None:
        raise ConfigurationError("the malicious-server mode needs the client's identity and the "
                                 "pinned registry (an IdentityBook, provisioned out of band).")
    # the client derives k and t itself and refuses a server that asks for others
    return _ClientProcess(_Config(spec, ring, bool(sparse), dropout, collusion, precision, seed,
                                  security, correctness, bool(malicious)), book)


class _ClientProcess:
    def __init__(self, cfg: _Config, book: IdentityBook | None = None) -> None:
        self.cfg = cfg
        self.spec = cfg.spec
        self.book = book

    def session(self, client: ClientId) -> ClientSession:
        return _Client(self.cfg, client, self.book)

    def restore(self, client: ClientId, state: bytes) -> ClientSession:
        return _Client.restore(self.cfg, client, state, self.book)


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

    def __init__(self, cfg: _Config, client: ClientId, book: IdentityBook | None = None) -> None:
        self.cfg = cfg
        self.me = client
        self.book = book
        self.identity = book.key(client) if book is not None else None
        self.u1_digest = b""
        self.u3: list[int] = []
        self.selected = 0
        self.nonce = secrets.token_bytes(32)
        self.commits: dict[int, bytes] = {}  # U₁ as the server showed it, with commitments
        self.stage = 0
        self.round_id = -1
        self.threshold = 0
        self.c_sk = X25519PrivateKey.generate()
        self.s_sk = X25519PrivateKey.generate()
        self.own: Keys = (public_bytes(self.c_sk), public_bytes(self.s_sk))
        self.b_seed = secrets.token_bytes(32)
        self.peer_keys: dict[int, Keys] = {}
        self.own_shares: tuple[bytes, bytes] = (b"", b"")
        self.received: dict[int, tuple[bytes, bytes]] = {}  # confirmed peers' shares
        self.rejected: set[int] = set()  # neighbours that shared but failed confirmation

    def _expect(self, kind: int, stage: int, request: bytes) -> wire.DecodedMessage:
        order: tuple[wire.Schema, ...] = (_ADVERTISE, _SHARE_REQ, _MASK_REQ, _UNMASK_REQ)
        if self.cfg.malicious:
            order = (_ADVERTISE, *((_REVEAL_REQ,) if self.cfg.reveal else ()), _SHARE_REQ,
                     _MASK_REQ, _CONS_REQ, _UNMASK_REQ)
        schema = order[stage] if stage < len(order) else None
        if schema is None:
            raise ProtocolViolationError(f"client {self.me}: the round is over for this client")
        if kind != schema.kind:
            raise ProtocolViolationError(
                f"client {self.me}: got message kind {kind} at stage {stage}")
        msg = wire.decode(request, schema)
        if stage > 0 and msg.round_id != self.round_id:
            raise ProtocolViolationError(f"client {self.me}: request for round {msg.round_id}")
        return msg

    def step(self, request: bytes, contribution: ContributionLike | None) -> bytes:
        msg = self._expect(wire.peek_kind(request), self.stage, request)
        self.stage += 1
        kind = msg.schema.kind
        if kind == _ADVERTISE.kind:
            self.round_id = msg.round_id
            keys: dict[str, object] = {"c_pk": self.own[0], "s_pk": self.own[1]}
            commit = (_nonce_commit(self.round_id, self.me, self.nonce) if self.cfg.reveal
                      else b"")
            if commit:
                keys["nonce_commit"] = commit
            if self.identity is not None:
                keys["sig"] = self.identity.sign(_key_statement(self.round_id, self.me, self.own,
                                                                commit))
            return wire.encode(_KEYS, self.round_id, keys)
        if kind == _REVEAL_REQ.kind:
            return self._reveal(msg)
        if kind == _SHARE_REQ.kind:
            return self._share(msg)
        if kind == _MASK_REQ.kind:
            return self._mask(msg, contribution)
        if kind == _CONS_REQ.kind:
            return self._consistency(msg)
        return self._unmask(msg)

    def _reveal(self, msg: wire.DecodedMessage) -> bytes:
        """Open this client's graph nonce once U₁ and every commitment in it are fixed."""
        u1 = _ids(msg, "u1")
        commits = _split(msg.raw("commits"), 32, len(u1), "commits")
        view = dict(zip(u1, commits, strict=True))
        if view.get(self.me) != _nonce_commit(self.round_id, self.me, self.nonce):
            raise InconsistentServerError(
                f"client {self.me}: the list of committed clients does not carry this client's "
                "commitment. Revealing nothing.")
        self.commits = view
        return wire.encode(_REVEAL, self.round_id, {"nonce": self.nonce})

    def _channel(self, peer: int) -> ChaCha20Poly1305:
        shared = exchange(self.c_sk, self.peer_keys[peer][0], f"client {peer}'s c_pk")
        return ChaCha20Poly1305(_kdf(shared, b"share", self.round_id))

    def _share(self, msg: wire.DecodedMessage) -> bytes:
        ids = _ids(msg, "ids")
        t, n = msg.uint("threshold"), msg.uint("selected")
        if self.me in ids or not ids or n < len(ids) + 1:
            raise MalformedMessageError("neighbour list is empty, contains the client, or "
                                        "names more clients than were selected")
        try:
            plan = self.cfg.plan(n)
        except ConfigurationError as exc:
            raise ClientRefusedError(f"client {self.me}: {exc}") from exc
        if t != plan.threshold or len(ids) > plan.degree or len(ids) < t:
            raise ClientRefusedError(
                f"client {self.me}: the server asks for threshold {t} among {len(ids)} "
                f"neighbours of {n} selected clients, but the configuration gives "
                f"k={plan.degree}, t={plan.threshold} (and at least t neighbours). Refusing to "
                "share keys.")
        c_pks = _split(msg.raw("c_pks"), 32, len(ids), "c_pks")
        s_pks = _split(msg.raw("s_pks"), 32, len(ids), "s_pks")
        self.threshold = t
        self.selected = n
        self.peer_keys = dict(zip(ids, zip(c_pks, s_pks, strict=True), strict=True))
        if self.book is not None:
            self._check_signed_keys(msg, ids, n)
        xs = [v + 1 for v in [*ids, self.me]]
        if max(xs) > shamir.MAX_POINT:
            raise ClientRefusedError(
                f"client {self.me}: SecAgg shares secrets at the points id + 1, which must be "
                f"at most {shamir.MAX_POINT}; a neighbour's id is too large")
        b_sh, sk_sh = shamir.share_many([self.b_seed, private_bytes(self.s_sk)], xs, t)
        self.own_shares = (b_sh[self.me + 1], sk_sh[self.me + 1])
        cts = []
        for v in ids:
            head = _SHARE_PT.pack(self.round_id, self.me, v)
            view = _transcript(self.round_id, self.me, self.own, v, self.peer_keys[v])
            cts.append(self._channel(v).encrypt(head, head + b_sh[v + 1] + sk_sh[v + 1] + view,
                                                _AAD))
        return wire.encode(_SHARES, self.round_id, {
            "ids": _id_array(ids), "ciphertexts": b"".join(cts),
            "b_commit": _commit(self.round_id, self.b_seed)})

    def _check_signed_keys(self, msg: wire.DecodedMessage, ids: list[int], n: int) -> None:
        """Every relayed key carries its owner's signature for this round; U₁ is one list."""
        book = self.book
        if book is None or "sigs" not in msg.values or "u1" not in msg.values:
            raise InconsistentServerError(
                f"client {self.me}: the share request carries no signed keys (malicious-server "
                "mode). Stopping the round.")
        u1 = _ids(msg, "u1")
        if not set(ids) | {self.me} <= set(u1) or len(u1) > n:
            raise InconsistentServerError(
                f"client {self.me}: the server's list of clients with keys (U1, {len(u1)} ids) "
                f"does not contain this client and its neighbours, or exceeds the {n} selected.")
        if not self.cfg.sparse and set(u1) - {self.me} != set(ids):
            raise InconsistentServerError(
                f"client {self.me}: the server withheld the keys of "
                f"{sorted(set(u1) - {self.me} - set(ids))} (in U1 but not relayed).")
        if self.cfg.reveal:
            self._check_graph(msg, u1, ids, n)
        sigs = _split(msg.raw("sigs"), 64, len(ids), "sigs")
        for v, sig in zip(ids, sigs, strict=True):
            if not book.registry.verify(v, _key_statement(self.round_id, v, self.peer_keys[v],
                                                          self.commits.get(v, b"")), sig):
                raise InconsistentServerError(
                    f"client {self.me}: the keys relayed for client {v} are not the ones client "
                    f"{v} signed for round {self.round_id} (swapped, replayed or forged). "
                    "Stopping the round.")
        self.u1_digest = _digest(u1, b"".join(self.commits[v] for v in u1)
                                 if self.cfg.reveal else b"")

    def _check_graph(self, msg: wire.DecodedMessage, u1: list[int], ids: list[int],
                     n: int) -> None:
        """The neighbours are those of the graph every committed nonce of U₁ determines."""
        if u1 != sorted(self.commits):
            raise InconsistentServerError(
                f"client {self.me}: U1 differs from the committed list it was shown before.")
        if "nonces" not in msg.values:
            raise InconsistentServerError(f"client {self.me}: no graph nonces in the request.")
        nonces = _split(msg.raw("nonces"), 32, len(u1), "nonces")
        for v, nonce in zip(u1, nonces, strict=True):
            if _nonce_commit(self.round_id, v, nonce) != self.commits[v]:
                raise InconsistentServerError(
                    f"client {self.me}: client {v}'s graph nonce does not open its commitment.")
        degree = min(self.cfg.plan(n).degree, len(u1) - 1)
        graph = harary_graph(u1, degree, seed=_graph_seed(self.round_id, u1, b"".join(nonces)))
        if list(graph[self.me]) != ids:
            raise InconsistentServerError(
                f"client {self.me}: the neighbours the server named are not those of the graph "
                "the clients' committed nonces determine. Stopping the round.")

    def _consistency(self, msg: wire.DecodedMessage) -> bytes:
        """Sign the one survivor list U₃ this client will ever accept in this round."""
        u3 = _ids(msg, "u3")
        declared = self.selected - len(u3)
        allowed = self.cfg.plan(self.selected).dropouts
        if declared > allowed:
            raise InconsistentServerError(
                f"client {self.me}: the survivor list declares {declared} of {self.selected} "
                f"selected clients dropped; the parameters tolerate {allowed} (δ = "
                f"{self.cfg.dropout:g}). Refusing to sign it.")
        if self.me not in u3 or len(set(u3) & set(self.received)) < self.threshold:
            raise InconsistentServerError(
                f"client {self.me}: the survivor list names this client's neighbours "
                f"{sorted(set(u3) & set(self.received))}, fewer than t = {self.threshold}, or "
                "not this client.")
        if self.identity is None:
            raise ConfigurationError(f"client {self.me} has no identity to sign with")
        self.u3 = u3
        return wire.encode(_CONS, self.round_id, {
            "sig": self.identity.sign(_survivor_statement(self.round_id, self.u1_digest, u3))})

    def _check_consistency(self, msg: wire.DecodedMessage, survivors: list[int],
                           dropped: list[int]) -> None:
        """T holders (neighbours and itself) signed this client's (U₁, U₃); the request follows U₃.

        Each honest client signs one survivor list per round, so with 2t > k + 1 + c two lists
        cannot both reach t signatures among one client's holders.
        """
        book = self.book
        if book is None or "signers" not in msg.values or "sigs" not in msg.values:
            raise InconsistentServerError(
                f"client {self.me}: the unmask request carries no survivor signatures.")
        signers = _ids(msg, "signers")
        sigs = _split(msg.raw("sigs"), 64, len(signers), "sigs")
        statement = _survivor_statement(self.round_id, self.u1_digest, self.u3)
        valid = {v for v, sig in zip(signers, sigs, strict=True)
                 if v in self.received and v in self.u3
                 and book.registry.verify(v, statement, sig)}
        if len(valid) + 1 < self.threshold:  # its own signature counts: it signed this list
            raise InconsistentServerError(
                f"client {self.me}: only {len(valid)} of its neighbours and itself signed the "
                f"survivor list it was shown ({len(self.u3)} clients); t = {self.threshold} "
                "are needed. "
                "The server told different clients different stories about who survived. "
                "Revealing nothing.")
        if not set(survivors) <= set(self.u3) or set(dropped) & set(self.u3):
            raise InconsistentServerError(
                f"client {self.me}: the unmask request contradicts the signed survivor list "
                f"(survivors {sorted(set(survivors) - set(self.u3))} not in it, or dropped "
                f"{sorted(set(dropped) & set(self.u3))} in it).")

    def _confirm(self, v: int, ct: bytes) -> tuple[bytes, bytes] | None:
        """V's shares if its ciphertext authenticates and its view of both key pairs is ours."""
        head = _SHARE_PT.pack(self.round_id, v, self.me)
        try:
            pt = self._channel(v).decrypt(head, ct, _AAD)
        except (InvalidTag, MalformedMessageError):
            return None
        view = _transcript(self.round_id, v, self.peer_keys[v], self.me, self.own)
        if pt[: _SHARE_PT.size] != head or pt[-_TRANSCRIPT_BYTES:] != view:
            return None
        body = pt[_SHARE_PT.size : -_TRANSCRIPT_BYTES]
        return body[: shamir.SHARE_BYTES], body[shamir.SHARE_BYTES:]

    def _mask(self, msg: wire.DecodedMessage, contribution: ContributionLike | None) -> bytes:
        ids = _ids(msg, "ids")
        if not set(ids) <= set(self.peer_keys):
            raise MalformedMessageError("shares from clients that are not neighbours")
        cts = _split(msg.raw("ciphertexts"), _CT_BYTES, len(ids), "ciphertexts")
        if len(ids) < self.threshold:
            raise ClientRefusedError(
                f"client {self.me}: the masked-input request names {len(ids)} live neighbours; "
                f"the threshold is {self.threshold}. Refusing to upload.")
        for v, ct in zip(ids, cts, strict=True):
            shares = self._confirm(v, ct)
            if shares is None:
                self.rejected.add(v)
            else:
                self.received[v] = shares
        if len(self.received) < self.threshold:
            raise ClientRefusedError(
                f"client {self.me}: only {len(self.received)} of {len(ids)} neighbours' keys "
                f"confirmed (failed: {sorted(self.rejected)}); the threshold is "
                f"{self.threshold}. Refusing to upload.")
        x = weighted_input(self.cfg.spec, contribution, "pairwise masking")
        y = self.cfg.ring.encode(x, rounding_rng(self.cfg.rounding_seed, self.round_id, self.me))
        scratch = np.empty_like(y)
        expand_mask(self.b_seed, len(y), y.dtype, purpose=SELF_MASK, round_id=self.round_id,
                    out=scratch)
        np.add(y, scratch, out=y)
        for v in sorted(self.received):
            _apply_pair_mask(y, self._pair_seed(v), self.me, v, self.round_id, scratch,
                             remove=False)
        return wire.encode(_MASKED[self.cfg.ring.bits], self.round_id,
                           {"y": y, "mask_peers": _id_array(self.received)})

    def export_state(self) -> bytes:
        """Everything the next exchange needs, secrets included: keep it on this client."""
        if self.stage == 0:
            return b""
        peers = sorted(self.peer_keys)
        received = sorted(self.received)
        return wire.encode(_STATE, self.round_id, {
            "stage": self.stage, "threshold": self.threshold,
            "keys": private_bytes(self.c_sk) + private_bytes(self.s_sk),
            "b_seed": self.b_seed, "peer_ids": _id_array(peers),
            "peer_keys": b"".join(self.peer_keys[v][0] + self.peer_keys[v][1] for v in peers),
            "own_shares": self.own_shares[0] + self.own_shares[1],
            "received_ids": _id_array(received),
            "received": b"".join(self.received[v][0] + self.received[v][1] for v in received),
            "rejected": _id_array(self.rejected), "u1_digest": self.u1_digest,
            "u3": _id_array(self.u3), "selected": self.selected, "nonce": self.nonce,
            "commit_ids": _id_array(self.commits),
            "commits": b"".join(self.commits[v] for v in sorted(self.commits))})

    @classmethod
    def restore(cls, cfg: _Config, client: ClientId, state: bytes,
                book: IdentityBook | None = None) -> _Client:
        """Inverse of :meth:`export_state` (raises :class:`MalformedMessageError`)."""
        out = cls(cfg, client, book)
        if not state:
            return out
        msg = wire.decode(state, _STATE)
        keys, share = msg.raw("keys"), 2 * shamir.SHARE_BYTES
        peers, received = _ids(msg, "peer_ids"), _ids(msg, "received_ids")
        pk = _split(msg.raw("peer_keys"), 64, len(peers), "peer_keys")
        rec = _split(msg.raw("received"), share, len(received), "received")
        own = msg.raw("own_shares")
        stage = msg.uint("stage")
        if len(keys) != 64 or len(msg.raw("b_seed")) != 32 or \
                len(own) != (share if stage >= 2 else 0) or \
                not set(received) <= set(peers) or not 1 <= stage <= 6:
            raise MalformedMessageError("inconsistent secagg client state")
        out.stage, out.round_id, out.threshold = msg.uint("stage"), msg.round_id, \
            msg.uint("threshold")
        out.c_sk = X25519PrivateKey.from_private_bytes(keys[:32])
        out.s_sk = X25519PrivateKey.from_private_bytes(keys[32:])
        out.own = (public_bytes(out.c_sk), public_bytes(out.s_sk))
        out.b_seed = msg.raw("b_seed")
        out.peer_keys = {v: (k[:32], k[32:]) for v, k in zip(peers, pk, strict=True)}
        half = shamir.SHARE_BYTES
        out.own_shares = (own[:half], own[half:]) if own else (b"", b"")
        out.received = {v: (r[:half], r[half:]) for v, r in zip(received, rec, strict=True)}
        out.rejected = set(_ids(msg, "rejected"))
        out.u1_digest = msg.raw("u1_digest") if "u1_digest" in msg.values else b""
        out.u3 = _ids(msg, "u3") if "u3" in msg.values else []
        out.selected = msg.uint("selected") if "selected" in msg.values else 0
        if "nonce" in msg.values:
            out.nonce = msg.raw("nonce")
        if "commit_ids" in msg.values:
            cids = _ids(msg, "commit_ids")
            out.commits = dict(zip(cids, _split(msg.raw("commits"), 32, len(cids), "commits"),
                                   strict=True))
        return out

    def _pair_seed(self, v: int) -> bytes:
        shared = exchange(self.s_sk, self.peer_keys[v][1], f"client {v}'s s_pk")
        return _kdf(shared, b"mask", self.round_id)

    def _unmask(self, msg: wire.DecodedMessage) -> bytes:
        survivors = _ids(msg, "survivors")
        dropped = _ids(msg, "dropped")
        pairs = _ids(msg, "pair_seeds")
        if self.cfg.malicious:
            self._check_consistency(msg, survivors, dropped)
        both = set(survivors) & set(dropped)
        if both or self.me in dropped:
            raise UnmaskRefusedError(
                f"client {self.me} refuses to unmask: the server asked for both the self-mask "
                f"and the key share of {sorted(both | ({self.me} & set(dropped)))}.")
        if not set(pairs) <= self.rejected or set(pairs) & (set(survivors) | set(dropped)):
            raise UnmaskRefusedError(
                f"client {self.me} refuses to unmask: pair seeds are revealed only for peers "
                f"it did not mask with ({sorted(self.rejected)}). Asked for {pairs}.")
        known = set(self.received) | {self.me}
        if not (set(survivors) | set(dropped)) <= known:
            raise MalformedMessageError("unmask request names clients whose shares I lack")
        if len(set(survivors) - {self.me}) < self.threshold:
            raise UnmaskRefusedError(
                f"client {self.me} refuses to unmask: the request names "
                f"{len(set(survivors) - {self.me})} surviving neighbours besides itself; the "
                f"threshold is {self.threshold}.")

        def share_of(v: int, which: int) -> bytes:
            return self.own_shares[which] if v == self.me else self.received[v][which]

        return wire.encode(_UNMASK, self.round_id, {
            "b_ids": _id_array(survivors),
            "b_shares": b"".join(share_of(v, 0) for v in survivors),
            "sk_ids": _id_array(dropped),
            "sk_shares": b"".join(share_of(v, 1) for v in dropped),
            "seed_ids": _id_array(pairs),
            "seeds": b"".join(self._pair_seed(v) for v in pairs)})


class _Server:
    """The server's side of one round."""

    def __init__(self, cfg: _Config, round_id: int, clients: Sequence[ClientId],
                 registry: IdentityRegistry | None = None) -> None:
        self.cfg = cfg
        self.round_id = round_id
        self.selected = frozenset(clients)
        self.plan: SecAggParams = cfg.plan(len(clients))
        self.registry = registry
        self.unmasker = Unmasker()
        if cfg.malicious and (registry is None or not self.selected <= set(registry.keys)):
            raise ConfigurationError(
                f"round {round_id}: the malicious-server mode needs a registered identity for "
                "every selected client.")
        self.phases: tuple[str, ...] = ("advertise", "share", "mask", "unmask", "finish")
        if cfg.malicious:
            self.phases = ("advertise", *(("reveal",) if cfg.reveal else ()), "share", "mask",
                           "consistency", "unmask", "finish")
        self.key_sigs: dict[int, bytes] = {}
        self.nonce_commits: dict[int, bytes] = {}  # graph-nonce commitments (malicious SecAgg+)
        self.nonces: dict[int, bytes] = {}
        self.graph_seed: bytes | None = None
        self.u1: list[int] = []
        self.cons_sigs: dict[int, bytes] = {}
        self.stage = 0
        self.keys: dict[int, Keys] = {}
        self.graph: dict[int, tuple[int, ...]] = {}
        # sender -> (recipients, one ciphertext row per recipient)
        self.shares_in: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.commits: dict[int, bytes] = {}
        self.u2: set[int] = set()
        self.u3: set[int] = set()
        self.relayed: dict[int, set[int]] = {}  # recipient -> senders relayed at stage 2
        self.peers: dict[int, set[int]] = {}  # uploader -> the peers it masked with
        self._one_sided_cache: tuple[frozenset[int], list[tuple[int, int]]] | None = None
        self.acc = np.zeros(cfg.length, dtype=cfg.ring.dtype)
        self.unmask_from: set[int] = set()
        # kind ("b": self-mask seeds, "sk": keys) -> (owners, holder's point, share words)
        self._share_rows: dict[str, list[tuple[np.ndarray, int, np.ndarray]]] = {
            "b": [], "sk": []}
        self.pair_seeds: dict[tuple[int, int], bytes] = {}  # (revealer, peer) -> seed
        self.requested: dict[int, tuple[list[int], list[int], list[int]]] = {}

    # --- receiving ---------------------------------------------------------------------------
    def _check(self, client: ClientId, message: bytes, schema: wire.Schema,
               allowed: Collection[int], seen: Collection[int]) -> wire.DecodedMessage:
        if client not in self.selected:
            raise ProtocolViolationError(f"round {self.round_id}: client {client} not selected")
        if client not in allowed:  # sets and dicts: O(1) membership
            raise ProtocolViolationError(
                f"round {self.round_id}: client {client} is not part of stage {self.stage}")
        if client in seen:
            raise ProtocolViolationError(f"round {self.round_id}: duplicate from {client}")
        msg = wire.decode(message, schema)
        if msg.round_id != self.round_id:
            raise ProtocolViolationError(
                f"client {client}: message for round {msg.round_id}, expected {self.round_id}")
        return msg

    def _phase(self) -> str | None:
        return self.phases[self.stage - 1] if 1 <= self.stage <= len(self.phases) else None

    def receive(self, client: ClientId, message: bytes) -> None:
        phase = self._phase()
        if phase == "advertise":
            msg = self._check(client, message, _KEYS, self.selected, self.keys)
            c_pk, s_pk = msg.raw("c_pk"), msg.raw("s_pk")
            if c_pk == s_pk:
                raise MalformedMessageError("public keys must be two distinct keys")
            check_public(c_pk, f"client {client}'s c_pk")
            check_public(s_pk, f"client {client}'s s_pk")
            commit = b""
            if self.cfg.reveal:
                commit = msg.raw("nonce_commit") if "nonce_commit" in msg.values else b""
                if len(commit) != 32:
                    raise MalformedMessageError("a 32-byte graph-nonce commitment is required")
            if self.registry is not None:
                sig = msg.raw("sig") if "sig" in msg.values else b""
                if not self.registry.verify(client, _key_statement(self.round_id, client,
                                                                   (c_pk, s_pk), commit), sig):
                    raise MalformedMessageError(
                        f"client {client}'s keys are not signed by its registered identity")
                self.key_sigs[client] = sig
            if commit:
                self.nonce_commits[client] = commit
            self.keys[client] = (c_pk, s_pk)
        elif phase == "reveal":
            msg = self._check(client, message, _REVEAL, self.u1, self.nonces)
            nonce = msg.raw("nonce")
            if _nonce_commit(self.round_id, client, nonce) != self.nonce_commits[client]:
                raise MalformedMessageError(f"client {client}'s nonce does not open its "
                                            "commitment")
            self.nonces[client] = nonce
        elif phase == "share":
            msg = self._check(client, message, _SHARES, self.graph, self.u2)
            ids = _ids(msg, "ids")
            if ids != list(self.graph[client]):
                raise MalformedMessageError("shares for the wrong neighbours")
            raw = msg.raw("ciphertexts")
            if len(raw) != _CT_BYTES * len(ids):
                raise MalformedMessageError(f"ciphertexts: {len(raw)} bytes for {len(ids)} items "
                                            f"of {_CT_BYTES}")
            commit = msg.raw("b_commit")
            if len(commit) != 32:
                raise MalformedMessageError("commitment must be 32 bytes")
            # kept as one row per recipient; routed to recipients in one vectorized pass
            self.shares_in[client] = (np.asarray(ids, dtype=np.int64), np.frombuffer(
                raw, dtype=np.uint8).reshape(len(ids), _CT_BYTES))
            self.commits[client] = commit
            self.u2.add(client)
        elif phase == "mask":
            msg = self._check(client, message, _MASKED[self.cfg.ring.bits], self.u2, self.u3)
            y = msg.array("y")
            peers = set(_ids(msg, "mask_peers"))
            if y.shape != (self.cfg.length,):
                raise MalformedMessageError(f"masked vector of shape {y.shape}, expected "
                                            f"({self.cfg.length},)")
            if not peers <= self.relayed.get(client, set()):
                raise MalformedMessageError("masked with peers whose shares it never received")
            np.add(self.acc, y, out=self.acc)  # mod 2^b; validated above
            self.peers[client] = peers
            self.u3.add(client)
        elif phase == "consistency":
            msg = self._check(client, message, _CONS, self.u3, self.cons_sigs)
            sig = msg.raw("sig")
            if self.registry is None or not self.registry.verify(
                    client, _survivor_statement(self.round_id, self._u1_digest(), sorted(self.u3)),
                    sig):
                raise MalformedMessageError(
                    f"client {client}'s signature of the survivor list does not verify")
            self.cons_sigs[client] = sig
        elif phase == "unmask":
            msg = self._check(client, message, _UNMASK, self.requested, self.unmask_from)
            want_b, want_sk, want_seeds = self.requested[client]
            if (_ids(msg, "b_ids") != want_b or _ids(msg, "sk_ids") != want_sk
                    or _ids(msg, "seed_ids") != want_seeds):
                raise MalformedMessageError("unmask reply for other clients than requested")
            b = _rows(msg.raw("b_shares"), len(want_b), "b_shares")
            sk = _rows(msg.raw("sk_shares"), len(want_sk), "sk_shares")
            seeds = _split(msg.raw("seeds"), 32, len(want_seeds), "seeds")
            # one row per share, gathered per secret by one sort at the end of the round
            self._share_rows["b"].append((np.asarray(want_b, np.int64), client + 1, b))
            self._share_rows["sk"].append((np.asarray(want_sk, np.int64), client + 1, sk))
            for v, s in zip(want_seeds, seeds, strict=True):
                self.pair_seeds[(client, v)] = s
            self.unmask_from.add(client)
        else:
            raise ProtocolViolationError(f"round {self.round_id}: not accepting messages now")

    # --- stages ---------------------------------------------------------------------------------
    def _need(self, alive: int, what: str) -> None:
        if alive < self.plan.threshold:
            raise ProtocolAbortError(
                f"round {self.round_id}: {alive} of {len(self.selected)} clients survived "
                f"{what}; the threshold needs {self.plan.threshold}.")

    def _need_neighbours(self, client: int, alive: int, what: str) -> None:
        if alive < self.plan.threshold:
            raise ProtocolAbortError(
                f"round {self.round_id}: only {alive} neighbours of client {client} {what}; "
                f"the threshold needs {self.plan.threshold} (k={self.plan.degree}). Clients "
                "refuse a request that names fewer.")

    def step(self, replies: Iterable[tuple[ClientId, bytes]]
             ) -> Mapping[ClientId, bytes] | SumResult:
        for client, message in replies:
            self.receive(client, message)
        self.stage += 1
        phase = self._phase()
        if phase == "advertise":
            req = wire.encode(_ADVERTISE, self.round_id, {"stage": 0})
            return {c: req for c in sorted(self.selected)}
        if phase == "reveal":
            self.u1 = sorted(self.keys)
            self._need(len(self.u1), "key advertisement")
            req = wire.encode(_REVEAL_REQ, self.round_id, {
                "u1": _id_array(self.u1),
                "commits": b"".join(self.nonce_commits[v] for v in self.u1)})
            return {u: req for u in self.u1}
        if phase == "share":
            return self._share_requests()
        if phase == "mask":
            self._need(len(self.u2), "key sharing")
            return self._mask_requests()
        if phase == "consistency":
            return self._consistency_requests()
        if phase == "unmask":
            return self._unmask_requests()
        if phase == "finish":
            return self._finish()
        raise ProtocolViolationError(f"round {self.round_id} is finished")

    def _mask_requests(self) -> dict[ClientId, bytes]:
        """Each client's relayed shares, routed in one vectorized pass.

        Every (recipient, sender, ciphertext) row of the round is sorted by recipient, then
        sender, and sliced per recipient.
        """
        senders_of = sorted(c for c in self.u2 if c in self.shares_in)
        if senders_of:
            to = np.concatenate([self.shares_in[c][0] for c in senders_of])
            frm = np.concatenate([np.full(len(self.shares_in[c][0]), c, dtype=np.int64)
                                  for c in senders_of])
            rows = np.concatenate([self.shares_in[c][1] for c in senders_of])
        else:
            to = frm = np.zeros(0, dtype=np.int64)
            rows = np.zeros((0, _CT_BYTES), dtype=np.uint8)
        order = np.lexsort((frm, to))
        to, frm = to[order], frm[order]
        recipients = sorted(self.u2)
        want = np.asarray(recipients, dtype=np.int64)
        starts = np.searchsorted(to, want, side="left").tolist()
        ends = np.searchsorted(to, want, side="right").tolist()
        out = {}
        for u, lo, hi in zip(recipients, starts, ends, strict=True):
            senders = frm[lo:hi]
            self._need_neighbours(u, len(senders), "shared keys")
            self.relayed[u] = set(senders.tolist())
            # gathered per recipient (21 kB at k = 162), not as one sorted copy of every row
            out[u] = wire.encode(_MASK_REQ, self.round_id, {
                "ids": senders.astype(_IDS), "ciphertexts": rows[order[lo:hi]].tobytes()})
        return out

    def _u1_digest(self) -> bytes:
        return _digest(self.u1, b"".join(self.nonce_commits[v] for v in self.u1)
                       if self.cfg.reveal else b"")

    def _consistency_requests(self) -> dict[ClientId, bytes]:
        """Malicious-server mode: every uploader signs the one survivor list U₃."""
        self._need(len(self.u3), "the upload")
        check_min_clients(len(self.u3), self.cfg.spec, f"round {self.round_id}")
        for u in sorted(self.u3):
            self._need_neighbours(u, len(self.peers[u] & self.u3), "uploaded")
        req = wire.encode(_CONS_REQ, self.round_id, {"u3": _id_array(self.u3)})
        return {u: req for u in sorted(self.u3)}

    def _share_requests(self) -> dict[ClientId, bytes]:
        alive = sorted(self.keys)
        self._need(len(alive), "key advertisement")
        if self.cfg.reveal:
            missing = sorted(set(self.u1) - set(self.nonces))
            if missing:
                raise ProtocolAbortError(
                    f"round {self.round_id}: clients {missing} committed to a graph nonce but "
                    "did not reveal it; the graph may not depend on which reveals the server "
                    "counts, so the round stops (a new round draws new keys and nonces).")
            self.graph_seed = _graph_seed(self.round_id, self.u1,
                                          b"".join(self.nonces[v] for v in self.u1))
        self.u1 = alive
        ids = np.asarray(alive, dtype=np.int64)
        rows = harary_rows(len(alive), min(self.plan.degree, len(alive) - 1), self.graph_seed)
        neighbours = ids[rows]
        self.graph = {u: tuple(r) for u, r in zip(alive, neighbours.tolist(), strict=True)}
        threshold = self.plan.threshold
        if rows.shape[1] + 1 < threshold:
            raise ProtocolAbortError(f"round {self.round_id}: clients have only "
                                     f"{rows.shape[1]} neighbours; threshold {threshold}.")
        # every advertised key once, as rows: each request gathers its neighbours' rows
        c_pks = np.frombuffer(b"".join(self.keys[v][0] for v in alive), np.uint8).reshape(-1, 32)
        s_pks = np.frombuffer(b"".join(self.keys[v][1] for v in alive), np.uint8).reshape(-1, 32)
        wire_ids = neighbours.astype(_IDS)
        common: dict[str, object] = {"threshold": threshold, "selected": len(self.selected)}
        if self.cfg.malicious:
            sigs = [self.key_sigs[v] for v in alive]
            common["u1"] = _id_array(alive)
        if self.cfg.reveal:
            common["nonces"] = b"".join(self.nonces[v] for v in alive)
        out = {}
        for i, u in enumerate(alive):
            r = rows[i]
            values: dict[str, object] = {
                "ids": wire_ids[i], "c_pks": c_pks[r].tobytes(), "s_pks": s_pks[r].tobytes(),
                **common}
            if self.cfg.malicious:
                values["sigs"] = b"".join(sigs[j] for j in r.tolist())
            out[u] = wire.encode(_SHARE_REQ, self.round_id, values)
        return out

    def _one_sided(self) -> list[tuple[int, int]]:
        """Pairs (u, v) of uploaders where u masked with v but v did not mask with u."""
        key = frozenset(self.u3)
        if self._one_sided_cache is None or self._one_sided_cache[0] != key:
            pairs = [(u, v) for u in sorted(self.u3) for v in self.peers[u] & self.u3
                     if u not in self.peers[v]]
            self._one_sided_cache = (key, sorted(pairs))
        return self._one_sided_cache[1]

    def _unmask_requests(self) -> dict[ClientId, bytes]:
        self._need(len(self.u3), "the upload")
        check_min_clients(len(self.u3), self.cfg.spec, f"round {self.round_id}")
        seeds_from: dict[int, set[int]] = {}
        for u, v in self._one_sided():  # v can give the pair seed it left out
            seeds_from.setdefault(v, set()).add(u)
        out = {}
        # malicious-server mode: only clients that signed U₃ are asked, with their neighbours'
        # signatures of it
        askable = sorted(self.cons_sigs) if self.cfg.malicious else sorted(self.u3)
        for u in askable:
            self._need_neighbours(u, len(self.peers[u] & self.u3), "uploaded")
            survivors = sorted((self.peers[u] & self.u3) | {u})
            dropped = sorted(self.peers[u] - self.u3)
            pairs = sorted(seeds_from.get(u, set()))
            values: dict[str, object] = {
                "survivors": _id_array(survivors), "dropped": _id_array(dropped),
                "pair_seeds": _id_array(pairs)}
            if self.cfg.malicious:
                signers = [v for v in sorted(self.cons_sigs) if v in self.peers[u]]
                # the client counts its own signature of the list too
                self._need_neighbours(u, len(signers) + 1, "signed the survivor list (with it)")
                values["signers"] = _id_array(signers)
                values["sigs"] = b"".join(self.cons_sigs[v] for v in signers)
            self.requested[u] = (survivors, dropped, pairs)
            out[u] = wire.encode(_UNMASK_REQ, self.round_id, values)
        return out

    def _table(self, kind: str, owners: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """The first t shares by point of each owner's secret of ``kind`` (one sort)."""
        rows = self._share_rows[kind]
        if rows:
            own = np.concatenate([r[0] for r in rows])
            pts = np.concatenate([np.full(len(r[0]), r[1], np.int64) for r in rows])
            words = np.concatenate([r[2] for r in rows])
        else:
            own = pts = np.zeros(0, np.int64)
            words = np.zeros((0, shamir.LIMBS), np.uint32)
        return shamir.share_table(own, pts, words, owners, self.plan.threshold)

    def shares_of(self, kind: str, owner: int) -> dict[int, bytes]:
        """Every share of ``owner``'s secret of ``kind`` ("b" or "sk") received, by point."""
        return {x: words[i].tobytes() for owners, x, words in self._share_rows[kind]
                for i in np.flatnonzero(owners == owner)}

    def _mask_ops(self) -> list[MaskOp]:
        """Every mask to remove, from the reconstructed and checked secrets of the round.

        All secrets are reconstructed in one vectorized pass; each is then checked against
        its commitment (self masks) or advertised public key (dropped clients' keys).
        """
        masked_with: dict[int, list[int]] = {}  # dropped v -> uploaders that masked with v
        dropped = self.u2 - self.u3
        for u in sorted(self.u3):
            for v in self.peers[u] & dropped:
                masked_with.setdefault(v, []).append(u)
        masked_with = {v: masked_with[v] for v in sorted(masked_with)}
        # nobody masked with a dropped client outside masked_with: nothing to rebuild for it
        tables = []
        for kind, owners, what in (("b", sorted(self.u3), "self mask"),
                                   ("sk", list(masked_with), "key")):
            try:
                tables.append((kind, owners, *self._table(kind, owners)))
            except ProtocolAbortError as exc:
                raise ProtocolAbortError(f"round {self.round_id}, {what} shares: {exc}") from exc
        # the round's keystream, roughly: what decides whether worker processes pay off
        weight = (len(self.u3) + len(masked_with) * self.plan.degree) * self.cfg.length
        items = [([(kind, c) for c in owners[a:b]], xs[a:b], ys[a:b])
                 for kind, owners, xs, ys in tables for a, b in _slices(len(owners), 8)]
        # interpolation costs about 700 keystream words per share: a round of n = 1000 stays
        # in this thread, where a process pool would cost more to feed than it saves
        share_work = sum(len(owners) for _, owners, _, _ in tables) * self.plan.threshold * 700
        try:
            secrets_ = dict(self.unmasker.map_chunks(_reconstruct_chunk, items,
                                                     weight=share_work))
        except ProtocolAbortError as exc:
            raise ProtocolAbortError(f"round {self.round_id}: {exc}") from exc
        ops: list[MaskOp] = []
        for u in sorted(self.u3):
            seed = secrets_[("b", u)]
            if _commit(self.round_id, seed) != self.commits[u]:
                raise ProtocolAbortError(f"round {self.round_id}: the shares of client {u}'s "
                                         "self mask are inconsistent with its commitment.")
            ops.append(MaskOp(seed, SELF_MASK, subtract=True))
        agreements: list[tuple[bytes, bytes, int, int]] = []
        for v, us in masked_with.items():
            sk_raw = secrets_[("sk", v)]
            if public_bytes(X25519PrivateKey.from_private_bytes(sk_raw)) != self.keys[v][1]:
                raise ProtocolAbortError(f"round {self.round_id}: the key shares of client {v} "
                                         "do not match its advertised key.")
            agreements += [(sk_raw, self.keys[u][1], u, self.round_id) for u in us]
        # one X25519 agreement and KDF per (dropped, surviving neighbour) pair, on every core
        batches = [(b"".join(a[0] for a in agreements[lo:hi]),
                    b"".join(a[1] for a in agreements[lo:hi]),
                    [a[2] for a in agreements[lo:hi]], self.round_id)
                   for lo, hi in _slices(len(agreements), 16)]
        seeds = self.unmasker.map_chunks(_pair_seed_batches, batches, weight=weight)
        for (v, us), start in zip(masked_with.items(), _offsets(masked_with.values()),
                                  strict=True):
            for i, u in enumerate(us):  # u added +PRG(seed) iff u < v
                ops.append(MaskOp(seeds[start + i], PAIR_MASK, subtract=u < v))
        for u, v in self._one_sided():
            revealed = self.pair_seeds.get((v, u))
            if revealed is None:
                raise ProtocolAbortError(
                    f"round {self.round_id}: client {u} masked with client {v}, which could not "
                    f"confirm {u}'s keys and did not return the pair seed.")
            ops.append(MaskOp(revealed, PAIR_MASK, subtract=u < v))
        return ops

    def _finish(self) -> SumResult:
        ops = self._mask_ops()
        acc = self.acc
        self.unmasker.remove(acc, ops, self.round_id)
        total = self.cfg.ring.decode(acc)
        self.stage = 6
        contributors = tuple(sorted(self.u3))
        check_total_weight(float(total[-1]), len(contributors), self.cfg.spec,
                           self.cfg.ring.resolution, f"round {self.round_id}")
        return SumResult(weighted_sum=total[:-1], total_weight=float(total[-1]),
                         contributors=contributors)


class _Process:
    def __init__(self, cfg: _Config, plans: dict[int, SecAggParams],
                 registry: IdentityRegistry | None = None,
                 book: IdentityBook | None = None, unmasker: Unmasker | None = None) -> None:
        self.cfg = cfg
        self.unmasker = unmasker if unmasker is not None else Unmasker()
        self.spec = cfg.spec
        self._plans = plans
        self.registry = registry  # public: the server side may hold it
        self._book = book  # the simulated clients' provisioning, used by client_session only

    def new_round(self, round_id: int, clients: Sequence[ClientId]) -> ServerSession:
        selected = check_round_clients(round_id, clients, self.spec)
        if selected and max(selected) >= shamir.MAX_POINT:
            raise ConfigurationError(
                f"SecAgg needs client ids below {shamir.MAX_POINT} (its Shamir shares are taken "
                f"at id + 1 in GF(2^32 - 5)). Found {max(selected)}.")
        server = _Server(self.cfg, round_id, selected,
                         self.registry)
        server.unmasker = self.unmasker
        self._plans[len(server.selected)] = server.plan
        return server

    def client_config(self) -> bytes:
        return _config_message(self.cfg)

    def client_session(self, client: ClientId) -> ClientSession:
        return pairwise_client(self.client_config(), self._book).session(client)


class PairwiseSecureSum:
    """SecAgg (complete graph) or SecAgg+ (sparse random graph) pairwise masking.

    The degree k and threshold t are derived per round from the number n of selected clients
    (:func:`~privfl.secagg.params.find_params`, Bell et al. 2020); every client derives them
    too, from the configuration message, and refuses a server that asks for others.

    Threat model: a semi-honest server that colludes with up to ⌊γn⌋ clients chosen before
    the graph is drawn, and up to ⌊δn⌋ dropped clients. Then an honest client's input is
    revealed, or the honest survivors' graph splits into parts whose partial sums the server
    learns, with probability ≤ 2^-(σ+1) each; a round aborts with probability ≤ 2^-η. A server
    that deviates (tells different clients different stories about who dropped) is outside
    this model.

    Args:
        sparse: SecAgg+ (a random Harary graph of the derived degree) instead of the complete
            graph.
        dropout_rate: δ, the fraction of *all* selected clients that may drop; t is kept low
            enough that rounds survive it. Defends liveness, not privacy.
        collusion_fraction: γ, the fraction of *all* selected clients that may collude with the
            server; t is kept above what they can hold of any honest client's secrets.
        precision: Resolution of the fixed-point encoding (the ring and scale are derived).
        rounding_seed: Seed of the stochastic-rounding dither, for bit-identical simulations
            across transports; ``None`` (default) draws it fresh (see
            :func:`~privfl.core.ring.rounding_rng`).
        security: σ: each privacy failure has probability ≤ 2^-(σ+1) per round.
        correctness: η: a round aborts with probability ≤ 2^-η at the dropout rate.
        identities: The malicious-server mode (Bonawitz et al.'s active variant). Either the
            registry of every client's Ed25519 identity (public; a deployed server's case:
            clients are provisioned out of band) or an :class:`IdentityBook` with the simulated
            clients' keys too (simulation: :func:`~privfl.secagg.identity.provision_identities`).
            Clients then sign their keys and the survivor list, refuse keys and lists their
            owners did not sign, and t grows so that 2t > k + 1 + ⌊γn⌋: a server that tells
            different clients different stories is caught before anything is revealed.
    """

    def __init__(self, *, sparse: bool = False, dropout_rate: float = 0.2,
                 collusion_fraction: float = 1 / 3, precision: float = 1e-6,
                 rounding_seed: int | None = None, security: int = 40,
                 correctness: int = 20,
                 identities: IdentityRegistry | IdentityBook | None = None,
                 unmasker: Unmasker | None = None) -> None:
        check_assumptions(collusion_fraction, dropout_rate, security, correctness)
        if unmasker is not None and not isinstance(unmasker, Unmasker):
            raise ConfigurationError(f"`unmasker` must be an Unmasker. Found {unmasker!r}.")
        self.unmasker = unmasker if unmasker is not None else Unmasker()
        if identities is not None and not isinstance(identities,
                                                     (IdentityRegistry, IdentityBook)):
            raise ConfigurationError("`identities` must be an IdentityRegistry or IdentityBook.")
        self._book = identities if isinstance(identities, IdentityBook) else None
        self.registry = (identities.registry if isinstance(identities, IdentityBook)
                         else identities)
        self.malicious = identities is not None
        self.sparse = sparse
        self.dropout_rate = dropout_rate
        self.collusion_fraction = collusion_fraction
        self.precision = precision
        self.rounding_seed = rounding_seed
        self.security = security
        self.correctness = correctness
        self.name = ("secagg+" if sparse else "secagg") + ("-malicious" if self.malicious else "")
        self._plans: dict[int, SecAggParams] = {}

    def create(self, spec: ValueSpec) -> _Process:
        """Derive the ring from ``spec`` (refusing a sum that could wrap)."""
        ring = ring_for(spec, precision=self.precision)
        return _Process(_Config(spec, ring, self.sparse, self.dropout_rate,
                                self.collusion_fraction, self.precision, self.rounding_seed,
                                self.security, self.correctness, self.malicious), self._plans,
                        self.registry, self._book, self.unmasker)

    def plan(self, n: int) -> SecAggParams:
        """The degree, threshold and failure probabilities for ``n`` selected clients."""
        return plan_graph(n, sparse=self.sparse, dropout=self.dropout_rate,
                          collusion=self.collusion_fraction, security=self.security,
                          correctness=self.correctness,
                          model=ServerModel.MALICIOUS if self.malicious
                          else ServerModel.SEMI_HONEST)

    def client_secrets(self) -> IdentityBook | None:
        """What simulated clients are provisioned with (their identities and the registry)."""
        return self._book

    def trust_assumption(self) -> TrustAssumption:
        """What pairwise masking protects, and what breaks it (with the rounds' k and t)."""
        graph = ("a random Harary graph of derived degree k (SecAgg+)" if self.sparse
                 else "the complete graph (SecAgg)")
        used = [self._plans[n] for n in sorted(self._plans)]
        plans = "; ".join(p.summary() for p in (used[:1] + used[-1:] if len(used) > 1
                                                  else used))
        server = ("Semi-honest server" if not self.malicious else
                  "Malicious server (it may relay, withhold, replay or swap messages and tell "
                  "clients different stories; clients hold pinned Ed25519 identities registered "
                  "out of band, sign their keys and the one survivor list they accept, and "
                  "reveal shares only with t neighbours' signatures on that list; t > "
                  "(k + 1 + ⌊γn⌋)/2)")
        deviating = ("A server that deviates from the protocol (inconsistent dropout stories) "
                     "is not covered" if not self.malicious else
                     "A forged registry (Sybil identities) is not covered; the SecAgg+ graph "
                     "comes from every client's committed nonce, so the server cannot place "
                     "colluders around a victim")
        return TrustAssumption(
            mechanism=self.name, server_sees=Visibility.MASKED,
            statement=f"The server sees only masked inputs, uniform over the ring, and the "
                      f"sum of the survivors; masks over {graph}, secrets Shamir-shared t-of-m "
                      f"among each client's holders (m = k + 1). {server}, colluding "
                      f"with at most γ = {self.collusion_fraction:.3g} of the selected clients, "
                      f"chosen before the graph is drawn; security σ = {self.security}, "
                      f"correctness η = {self.correctness}."
                      + (f" Rounds run with {plans}." if plans else ""),
            broken_by="t colluding holders of one honest client, or colluders and dropped "
                      "clients that split the honest survivors' graph (the server then learns "
                      "each part's sum): each at most 2^-(σ+1) per round under the stated "
                      f"fractions, certain beyond them. {deviating}",
            dropouts_tolerated=f"up to δ = {self.dropout_rate:g} of the selected clients at any "
                               f"stage (a round aborts with probability ≤ 2^-{self.correctness}); "
                               "a client with fewer than t surviving neighbours aborts the round")
