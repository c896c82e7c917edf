"""A server that lies: inconsistent survivor lists, swapped, replayed and withheld keys.

Each attack is run against the semi-honest mode (where the maths lets it succeed, it does) and
against the malicious-server mode (Ed25519 identities, signed keys, a signed survivor list,
t > (k + 1 + ⌊γn⌋)/2), where a client stops the round with an InconsistentServerError naming
the inconsistency before revealing anything.
"""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from privfl.core import wire
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport, ScheduledDropout
from privfl.errors import (
    ClientRefusedError,
    ConfigurationError,
    MalformedMessageError,
    ProtocolAbortError,
)
from privfl.secagg import shamir
from privfl.secagg.identity import IdentityRegistry, provision_identities
from privfl.secagg.keyagreement import exchange
from privfl.secagg.pairwise import (
    _CONS,
    _CONS_REQ,
    _KEYS,
    _MASKED,
    _SHARE_REQ,
    _UNMASK,
    _UNMASK_REQ,
    InconsistentServerError,
    PairwiseSecureSum,
    _digest,
    _kdf,
    _survivor_statement,
)
from privfl.secagg.prg import PAIR_MASK, SELF_MASK, expand_mask

D, ROUND = 8, 5
SPEC = lambda n: ValueSpec(length=D, max_clients=n, linf_bound=1.0)  # noqa: E731


def _ids(ids: object) -> np.ndarray:
    return np.asarray(sorted(ids), dtype="<u4")  # type: ignore[call-overload]


class Round:
    """One round driven stage by stage by a server that may lie."""

    def __init__(self, ss: PairwiseSecureSum, n: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.n = n
        self.proc = ss.create(SPEC(n))
        self.server = self.proc.new_round(ROUND, list(range(n)))
        self.clients = {c: self.proc.client_session(c) for c in range(n)}
        self.x = {c: rng.uniform(-1, 1, D) for c in range(n)}
        self.y: dict[int, np.ndarray] = {}
        self.requests: dict[int, bytes] = {}

    def stage(self, edit: dict[int, bytes] | None = None, *, inputs: bool = False) -> None:
        """Answer the server's pending requests (``edit`` replaces some) and step it."""
        replies = []
        for c, req in sorted({**self.requests, **(edit or {})}.items()):
            reply = self.clients[c].step(req, Contribution(self.x[c]) if inputs else None)
            if inputs:
                self.y[c] = wire.decode(reply, _MASKED[32]).array("y")
            replies.append((c, reply))
        out = self.server.step(replies)
        assert isinstance(out, dict)
        self.requests = dict(out)

    def up_to_masked_input(self) -> None:
        self.requests = dict(self.server.step(()))  # type: ignore[arg-type]
        self.stage()  # keys
        self.stage()  # shares

    def masked_input(self) -> None:
        self.stage(inputs=True)


def _recover(r: Round, victim: int, b: bytes, sk: bytes) -> np.ndarray:
    """The victim's input from its upload, its self-mask seed and its key."""
    srv = r.server
    acc = r.y[victim].copy()
    scratch = np.empty_like(acc)
    expand_mask(b, len(acc), acc.dtype, purpose=SELF_MASK, round_id=ROUND, out=scratch)
    acc -= scratch
    key = X25519PrivateKey.from_private_bytes(sk)
    for w in srv.peers[victim]:  # type: ignore[attr-defined]
        seed = _kdf(exchange(key, srv.keys[w][1], "pk"), b"mask", ROUND)  # type: ignore[attr-defined]
        expand_mask(seed, len(acc), acc.dtype, purpose=PAIR_MASK, round_id=ROUND, out=scratch)
        acc = acc - scratch if victim < w else acc + scratch
    return srv.cfg.ring.decode(acc)[:-1]  # type: ignore[attr-defined, no-any-return]


def _unmask_request(survivors: object, dropped: object, **extra: object) -> bytes:
    return wire.encode(_UNMASK_REQ, ROUND, {"survivors": _ids(survivors),
                                            "dropped": _ids(dropped),
                                            "pair_seeds": _ids([]), **extra})


def test_inconsistent_survivor_lists_recover_an_input_in_the_semi_honest_mode() -> None:
    """n = 12, complete graph, t = 5: 2t ≤ k + 1 + c, so two stories yield both secrets."""
    ss = PairwiseSecureSum()
    r = Round(ss, 12)
    assert (ss.plan(12).threshold, ss.plan(12).degree) == (5, 11)
    r.up_to_masked_input()
    r.masked_input()
    victim, alive = 0, set(range(12))
    told_survived, told_dropped = {0, 1, 2, 3, 4, 5}, set(range(6, 12))
    b_shares, sk_shares = {}, {}
    for c in told_survived:
        reply = wire.decode(r.clients[c].step(_unmask_request(alive, []), None), _UNMASK)
        b_shares[c + 1] = reply.raw("b_shares")[0:shamir.SHARE_BYTES]  # victim is id 0: first
    for c in told_dropped:
        reply = wire.decode(r.clients[c].step(_unmask_request(alive - {victim}, [victim]), None),
                            _UNMASK)
        sk_shares[c + 1] = reply.raw("sk_shares")
    b = shamir.reconstruct(b_shares, 5)
    sk = shamir.reconstruct(sk_shares, 5)
    np.testing.assert_allclose(_recover(r, victim, b, sk), r.x[victim], atol=1e-5)


def _malicious(n: int, sparse: bool = False) -> tuple[PairwiseSecureSum, Round]:
    ss = PairwiseSecureSum(sparse=sparse, identities=provision_identities(range(n)))
    return ss, Round(ss, n)


def test_inconsistent_survivor_lists_are_caught_in_the_malicious_server_mode() -> None:
    """Same attack, malicious-server mode (t = 9): colluders sign both stories; still caught."""
    ss, r = _malicious(12)
    assert ss.plan(12).threshold == 9
    book = ss.client_secrets()
    assert book is not None
    r.up_to_masked_input()
    r.masked_input()
    victim, everyone = 0, set(range(12))
    colluders = {8, 9, 10, 11}  # ⌊γn⌋ = 4: they sign whatever the server asks
    story_a, story_b = sorted(everyone), sorted(everyone - {victim})
    group_a, group_b = {0, 1, 2, 3, 4}, {5, 6, 7}  # the best split of the honest clients
    sigs_a = {c: wire.decode(r.clients[c].step(
        wire.encode(_CONS_REQ, ROUND, {"u3": _ids(story_a)}), None), _CONS).raw("sig")
        for c in group_a}
    with pytest.raises(InconsistentServerError, match="dropped"):
        # a client asked to sign a list without a neighbour that did upload cannot tell, but
        # one that declares more than ⌊δn⌋ = 2 dropped is refused
        r.clients[5].step(wire.encode(_CONS_REQ, ROUND, {"u3": _ids(everyone - {0, 1, 2})}),
                          None)
    sigs_b = {c: wire.decode(r.clients[c].step(
        wire.encode(_CONS_REQ, ROUND, {"u3": _ids(story_b)}), None), _CONS).raw("sig")
        for c in group_b - {5}}
    digest = _digest(r.server.u1)  # type: ignore[attr-defined]
    for c in colluders:
        sigs_a[c] = book.key(c).sign(_survivor_statement(ROUND, digest, story_a))
        sigs_b[c] = book.key(c).sign(_survivor_statement(ROUND, digest, story_b))
    assert len(sigs_a) == 9  # story A has its t signatures...
    # ...but story B has 2 honest + 4 colluding = 6 < t: the client told "victim dropped" stops
    req = _unmask_request(set(story_b), [victim], signers=_ids(sigs_b),
                          sigs=b"".join(sigs_b[c] for c in sorted(sigs_b)))
    with pytest.raises(InconsistentServerError, match="different stories"):
        r.clients[6].step(req, None)
    # and a client of story A asked for the victim's key contradicts the list it signed
    req = _unmask_request(set(story_b), [victim], signers=_ids(sigs_a),
                          sigs=b"".join(sigs_a[c] for c in sorted(sigs_a)))
    with pytest.raises(InconsistentServerError, match="contradicts the signed survivor list"):
        r.clients[1].step(req, None)


def _edit(message: bytes, schema: wire.Schema, **changes: object) -> bytes:
    msg = wire.decode(message, schema)
    return wire.encode(schema, msg.round_id, {**msg.values, **changes})


def test_swapped_keys_are_caught() -> None:
    ss, r = _malicious(10)
    r.requests = dict(r.server.step(()))  # type: ignore[arg-type]
    r.stage()  # keys
    msg = wire.decode(r.requests[0], _SHARE_REQ)
    s_pks = bytearray(msg.raw("s_pks"))
    s_pks[0:32], s_pks[32:64] = s_pks[32:64], s_pks[0:32]  # clients 1 and 2 swapped for client 0
    with pytest.raises(InconsistentServerError, match="keys relayed for client 1"):
        r.clients[0].step(_edit(r.requests[0], _SHARE_REQ, s_pks=bytes(s_pks)), None)


def test_replayed_keys_from_an_earlier_round_are_caught() -> None:
    ss, old = _malicious(10)
    old.requests = dict(old.server.step(()))  # type: ignore[arg-type]
    old.stage()
    stale = wire.decode(old.requests[0], _SHARE_REQ)
    # next round: same identities, fresh keys; the server relays round 5's signed keys instead
    proc = old.proc
    server = proc.new_round(ROUND + 1, list(range(10)))
    clients = {c: proc.client_session(c) for c in range(10)}
    req = server.step(())
    assert isinstance(req, dict)
    replies = [(c, clients[c].step(req[c], None)) for c in range(10)]
    req = server.step(replies)
    assert isinstance(req, dict)
    replayed = _edit(req[0], _SHARE_REQ, c_pks=stale.raw("c_pks"), s_pks=stale.raw("s_pks"),
                     sigs=stale.raw("sigs"))
    with pytest.raises(InconsistentServerError, match="replayed"):
        clients[0].step(replayed, None)


def test_a_withheld_signed_key_is_caught() -> None:
    ss, r = _malicious(10)
    r.requests = dict(r.server.step(()))  # type: ignore[arg-type]
    r.stage()
    msg = wire.decode(r.requests[0], _SHARE_REQ)
    keep = [i for i, v in enumerate(msg.array("ids")) if v != 3]
    cut = _edit(r.requests[0], _SHARE_REQ,
                ids=msg.array("ids")[keep],
                c_pks=b"".join(msg.raw("c_pks")[32 * i:32 * i + 32] for i in keep),
                s_pks=b"".join(msg.raw("s_pks")[32 * i:32 * i + 32] for i in keep),
                sigs=b"".join(msg.raw("sigs")[64 * i:64 * i + 64] for i in keep))
    with pytest.raises(InconsistentServerError, match=r"withheld the keys of \[3\]"):
        r.clients[0].step(cut, None)
    # SecAgg+: the neighbours are fixed by the nonces' graph, so one cannot go missing either
    ss, r = _malicious(20, sparse=True)
    r.requests = dict(r.server.step(()))  # type: ignore[arg-type]
    r.stage()
    r.stage()
    msg = wire.decode(r.requests[0], _SHARE_REQ)
    keep = list(range(1, len(msg.array("ids"))))
    cut = _edit(r.requests[0], _SHARE_REQ,
                ids=msg.array("ids")[keep],
                c_pks=b"".join(msg.raw("c_pks")[32 * i:32 * i + 32] for i in keep),
                s_pks=b"".join(msg.raw("s_pks")[32 * i:32 * i + 32] for i in keep),
                sigs=b"".join(msg.raw("sigs")[64 * i:64 * i + 64] for i in keep))
    with pytest.raises(InconsistentServerError, match="committed nonces determine"):
        r.clients[0].step(cut, None)
    # ...and a U1 list shrunk for this client only changes what it signs: its neighbours'
    # signatures of the survivor list then fail to verify for it (the same check as above)


def test_the_server_refuses_unsigned_or_foreign_keys() -> None:
    ss, r = _malicious(10)
    req = r.server.step(())
    assert isinstance(req, dict)
    good = r.clients[0].step(req[0], None)
    with pytest.raises(MalformedMessageError, match="registered identity"):
        r.server.receive(0, _edit(good, _KEYS, sig=b"\0" * 64))
    other = r.clients[1].step(req[1], None)
    with pytest.raises(MalformedMessageError, match="registered identity"):
        r.server.receive(0, other)  # client 1's keys and signature, sent as client 0's


def test_a_pinned_client_refuses_a_downgrade_and_needs_its_identity() -> None:
    book = provision_identities(range(4))
    semi = PairwiseSecureSum().create(SPEC(4)).client_config()
    from privfl.secagg.pairwise import pairwise_client

    with pytest.raises(ClientRefusedError, match="semi-honest"):
        pairwise_client(semi, book)
    mal = PairwiseSecureSum(identities=book).create(SPEC(4)).client_config()
    with pytest.raises(ConfigurationError, match="IdentityBook"):
        pairwise_client(mal, None)
    with pytest.raises(ConfigurationError, match="identity for every selected client"):
        PairwiseSecureSum(identities=book.registry).create(SPEC(10)).new_round(1, range(10))


@pytest.mark.parametrize(("n", "sparse"), [(12, False), (20, True)])
def test_malicious_server_mode_is_exact_under_dropouts(n: int, sparse: bool) -> None:
    ss, r = _malicious(n, sparse)
    plan = ss.plan(n)
    assert 2 * plan.threshold > plan.degree + 1 + plan.colluders
    # dropped after sharing keys, and after uploading (before signing the survivor list);
    # SecAgg+ has one more exchange first (the graph nonces)
    drops = {2: {2}, 4: {5}} if sparse else {1: {2}, 3: {5}}
    clients = {c: r.proc.client_session(c) for c in range(n)}
    server = r.proc.new_round(ROUND, list(range(n)))
    out = InMemoryTransport(ScheduledDropout(drops)).run_round(
        server, clients, {c: Contribution(r.x[c]) for c in range(n)})
    keep = out.result.contributors
    assert 2 not in keep and 5 in keep  # 5 uploaded, then dropped before signing
    np.testing.assert_allclose(out.result.weighted_sum, sum(r.x[c] for c in keep), atol=1e-5)
    stated = ss.trust_assumption().statement
    assert "Malicious server" in stated and f"k={plan.degree}, t={plan.threshold}" in stated


def test_registry_round_trips_and_rejects_garbage() -> None:
    book = provision_identities(range(3))
    blob = book.registry.to_bytes()
    assert IdentityRegistry.from_bytes(blob).keys == book.registry.keys
    with pytest.raises(MalformedMessageError):
        IdentityRegistry.from_bytes(blob[:-1])
    assert "public=" in repr(book.key(0)) and "private" not in repr(book.key(0)).lower()


def test_privfl_run_with_a_malicious_server_mode(tmp_path: object) -> None:
    """The CLI's --malicious-server: same model as the semi-honest sum, report says so."""
    from pathlib import Path

    from privfl.core.simulation import Execution
    from privfl.experiment import RunConfig, SecureName, run_experiment

    base = dict(rounds=2, secure=SecureName.SECAGG_PLUS, secure_randomness=False, seed=3,
                out=str(tmp_path))
    semi = run_experiment(RunConfig(**base, name="semi"), plots=False)  # type: ignore[arg-type]
    mal = run_experiment(RunConfig(**base, name="mal", malicious_server=True),  # type: ignore[arg-type]
                         plots=False)
    np.testing.assert_array_equal(semi.params, mal.params)
    text = (Path(str(tmp_path)) / "mal" / "privacy_report.md").read_text()
    assert "Malicious server" in text and "secagg+-malicious" in text
    with pytest.raises(ConfigurationError, match="secagg"):
        RunConfig(secure=SecureName.CKKS, malicious_server=True)
    with pytest.raises(ConfigurationError, match="sequential"):
        RunConfig(secure=SecureName.SECAGG, malicious_server=True,
                  execution=Execution.PROCESSES)


def test_the_graph_comes_from_every_clients_committed_nonce() -> None:
    """Malicious SecAgg+: the server cannot choose the graph, nor which nonces count."""
    from privfl.secagg.graph import harary_graph
    from privfl.secagg.pairwise import _REVEAL_REQ, _graph_seed

    ss, r = _malicious(20, sparse=True)
    r.requests = dict(r.server.step(()))  # type: ignore[arg-type]
    r.stage()  # keys with nonce commitments -> reveal requests
    reveal = dict(r.requests)
    r.stage()  # nonces -> share requests
    srv = r.server
    u1 = sorted(range(20))
    seed = _graph_seed(ROUND, u1, b"".join(srv.nonces[v] for v in u1))  # type: ignore[attr-defined]
    assert srv.graph == harary_graph(u1, ss.plan(20).degree, seed=seed)  # type: ignore[attr-defined]
    # a neighbour list other than the nonces' graph is refused
    msg = wire.decode(r.requests[0], _SHARE_REQ)
    ids = list(msg.array("ids"))
    stranger = next(c for c in range(1, 20) if c not in ids)
    forged = sorted(ids[:-1] + [stranger])
    with pytest.raises(InconsistentServerError, match="graph the clients' committed nonces"):
        r.clients[0].step(_edit(r.requests[0], _SHARE_REQ, ids=_ids(forged)), None)
    # a nonce swapped for another value does not open its commitment
    nonces = bytearray(msg.raw("nonces"))
    nonces[40] ^= 1
    with pytest.raises(InconsistentServerError, match="does not open its commitment"):
        r.clients[1].step(_edit(r.requests[1], _SHARE_REQ, nonces=bytes(nonces)), None)
    # a committed list without this client's commitment gets no nonce
    ss2, r2 = _malicious(20, sparse=True)
    r2.requests = dict(r2.server.step(()))  # type: ignore[arg-type]
    r2.stage()
    req = wire.decode(r2.requests[3], _REVEAL_REQ)
    commits = bytearray(req.raw("commits"))
    commits[3 * 32] ^= 1
    with pytest.raises(InconsistentServerError, match="commitment"):
        r2.clients[3].step(_edit(r2.requests[3], _REVEAL_REQ, commits=bytes(commits)), None)
    assert reveal  # every client of U1 was asked to reveal


def test_a_missing_reveal_stops_the_round() -> None:
    """The server may not choose which nonces count (it could grind the graph otherwise)."""
    ss, r = _malicious(20, sparse=True)
    clients = {c: r.proc.client_session(c) for c in range(20)}
    server = r.proc.new_round(ROUND, list(range(20)))
    with pytest.raises(ProtocolAbortError, match=r"clients \[4\] committed to a graph nonce"):
        InMemoryTransport(ScheduledDropout({1: {4}})).run_round(
            server, clients, {c: Contribution(r.x[c]) for c in range(20)})
