from __future__ import annotations

import contextlib
import secrets

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

from privfl.core import wire
from privfl.core.ring import ring_for
from privfl.core.securesum import SecureSum
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport, ScheduledDropout
from privfl.errors import (
    ConfigurationError,
    EncodingOverflowError,
    MalformedMessageError,
    PrivflError,
    ProtocolAbortError,
    ProtocolViolationError,
)
from privfl.secagg import shamir
from privfl.secagg.graph import harary_graph, plan_graph
from privfl.secagg.pairwise import _MASKED, _UNMASK_REQ, PairwiseSecureSum, UnmaskRefusedError

from ..core.contract import SecureSumContract
from ..fuzzing import MUTATION, mutate

SPEC = lambda d, n: ValueSpec(length=d, max_clients=n, linf_bound=1.0)  # noqa: E731


class TestSecAggContract(SecureSumContract):
    stages = 3  # dropping before upload (stages 0-2) removes the client from the sum

    def make_secure_sum(self) -> SecureSum:
        return PairwiseSecureSum()

    def make_spec(self, length: int, max_clients: int) -> ValueSpec:
        return SPEC(length, max_clients)

    def test_everyone_dropping_aborts(self) -> None:  # overrides: the message differs
        vals, ws = self._data(4, 16, seed=3)
        with pytest.raises(ProtocolAbortError, match="survived"):
            self._run(vals, ws, ScheduledDropout({0: {0, 1, 2, 3}}))

    # The generic property test drops arbitrary many clients at stage 0, which a threshold
    # protocol must refuse; test_sum_is_exact_for_random_dropouts_at_every_stage replaces it.
    test_property_exact_for_random_inputs = None  # type: ignore[assignment]


class TestSecAggPlusContract(TestSecAggContract):
    def make_secure_sum(self) -> SecureSum:
        # the contract drops 2 of 8 clients: δ = 0.25 of the population (k = 6, t = 3)
        return PairwiseSecureSum(sparse=True, dropout_rate=0.25)


def _run(ss: PairwiseSecureSum, n: int, d: int, drops: dict[int, set[int]], seed: int,
         round_id: int = 7):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    proc = ss.create(SPEC(d, n))
    vals = {c: rng.uniform(-1, 1, d) for c in range(n)}
    ws = {c: float(rng.uniform(0.05, 1.0)) for c in range(n)}
    server = proc.new_round(round_id, list(range(n)))
    sessions = {c: proc.client_session(c) for c in range(n)}
    out = InMemoryTransport(ScheduledDropout(drops)).run_round(
        server, sessions, {c: Contribution(vals[c], ws[c]) for c in range(n)})
    return out, vals, ws


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(3, 16), d=st.integers(1, 50), seed=st.integers(0, 2**31),
       sparse=st.booleans(), data=st.data())
def test_sum_is_exact_for_random_dropouts_at_every_stage(n: int, d: int, seed: int,
                                                         sparse: bool, data: st.DataObject) -> None:
    ss = PairwiseSecureSum(sparse=sparse)
    plan = ss.plan(n)
    # drop at most what the parameters were derived for: ⌊δn⌋ of the n selected clients
    budget = plan.dropouts
    dropped = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=budget))
    stages = data.draw(st.lists(st.integers(0, 3), min_size=len(dropped),
                                max_size=len(dropped)))
    drops: dict[int, set[int]] = {}
    for c, s in zip(dropped, stages, strict=True):
        drops.setdefault(s, set()).add(c)
    out, vals, ws = _run(ss, n, d, drops, seed)
    keep = out.result.contributors
    assert set(keep) == set(range(n)) - {c for s, cs in drops.items() if s < 3 for c in cs}
    ref = sum(ws[c] * vals[c] for c in keep)
    np.testing.assert_allclose(out.result.weighted_sum, ref, atol=1e-6, rtol=0)
    assert out.result.total_weight == pytest.approx(sum(ws[c] for c in keep), abs=1e-6)


def test_too_many_dropouts_abort_with_the_counts() -> None:
    ss = PairwiseSecureSum()
    plan = ss.plan(10)
    drops = {2: set(range(10 - plan.threshold + 1))}
    with pytest.raises(ProtocolAbortError, match=f"needs {plan.threshold}"):
        _run(ss, 10, 20, drops, seed=1)


def test_masked_uploads_are_uniform_over_the_ring() -> None:
    ss = PairwiseSecureSum()
    proc = ss.create(SPEC(20_000, 3))
    server = proc.new_round(1, [0, 1, 2])
    sessions = {c: proc.client_session(c) for c in range(3)}
    uploads = []

    class Spy:
        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner = inner

        def step(self, request, contribution):  # type: ignore[no-untyped-def]
            reply = self.inner.step(request, contribution)
            if wire.peek_kind(reply) == 35:
                uploads.append(wire.decode(reply, _MASKED[32]).array("y"))
            return reply

    InMemoryTransport().run_round(server, {c: Spy(s) for c, s in sessions.items()},
                                  {c: Contribution(np.zeros(20_000)) for c in range(3)})
    y = uploads[0].astype(np.float64) / 2**32  # an all-zero input, masked
    assert stats.kstest(y, "uniform").pvalue > 1e-3
    counts = np.bincount((uploads[0] >> np.uint32(28)).astype(np.int64), minlength=16)
    assert stats.chisquare(counts).pvalue > 1e-3


def test_fewer_than_t_shares_reveal_nothing() -> None:
    secret = secrets.token_bytes(32)
    sh = shamir.share(secret, list(range(1, 8)), 4)
    assert all(len(v) == shamir.SHARE_BYTES == 36 for v in sh.values())
    assert shamir.reconstruct({x: sh[x] for x in (2, 4, 6, 7)}, 4) == secret
    with pytest.raises(ProtocolAbortError, match="needs 4 shares"):
        shamir.reconstruct({x: sh[x] for x in (1, 2, 3)}, 4)
    # t-1 shares are consistent with every secret: for each limb, interpolate the 3 shares with
    # the other secret's limb as constant term; the 4th share that gives is valid for `other`
    other = secrets.token_bytes(32)
    q = shamir.PRIME
    xs = [0, 1, 2, 3]
    o = int.from_bytes(other, "big")
    limbs = [(o >> (31 * k)) & (2**31 - 1) for k in range(shamir.LIMBS)]
    words = {x: np.frombuffer(sh[x], dtype="<u4").astype(object) for x in (1, 2, 3)}

    def lagrange(at: int, ys: list[int]) -> int:
        total = 0
        for i, xi in enumerate(xs):
            num = den = 1
            for j, xj in enumerate(xs):
                if i != j:
                    num, den = num * (at - xj) % q, den * (xi - xj) % q
            total = (total + ys[i] * num * pow(den, -1, q)) % q
        return total

    fifth = [lagrange(5, [limbs[k]] + [int(words[x][k]) for x in (1, 2, 3)])
             for k in range(shamir.LIMBS)]
    forged = {x: sh[x] for x in (1, 2, 3)}
    forged[5] = np.array(fifth, dtype="<u4").tobytes()
    assert shamir.reconstruct(forged, 4) == other


def test_shamir_batch_matches_single_and_refuses_bad_shares() -> None:
    vals = [secrets.token_bytes(32) for _ in range(20)]
    points = [1, 9, 2**31, shamir.MAX_POINT, 77, 1000]
    shares = shamir.share_many(vals, points, 4)
    rng = np.random.default_rng(5)
    pick = {i: {x: shares[i][x] for x in rng.choice(points, 4 + i % 3, replace=False).tolist()}
            for i in range(20)}
    out = shamir.reconstruct_many(pick, 4)
    assert [out[i] for i in range(20)] == vals
    assert all(shamir.reconstruct(pick[i], 4) == vals[i] for i in range(20))
    bad = dict(pick[0])
    x0 = next(iter(sorted(bad)))
    bad[x0] = b"\xff" * shamir.SHARE_BYTES  # limbs >= q: not field elements
    with pytest.raises(ProtocolAbortError, match="not an element"):
        shamir.reconstruct_many({"victim": bad}, 4)
    short = dict(pick[1])
    short[next(iter(sorted(short)))] = b"\x00" * 35
    with pytest.raises(ProtocolAbortError, match="not an element"):
        shamir.reconstruct(short, 4)
    flipped = dict(pick[2])
    first = sorted(flipped)[0]
    # the top limb holds 8 secret bits: a changed share leaves it < 2^8 with chance 2^-24
    flipped[first] = (int.from_bytes(flipped[first], "little") ^ (1 << (32 * 8 + 20))
                      ).to_bytes(36, "little")
    with pytest.raises(ProtocolAbortError, match="inconsistent shares of secret 'x'"):
        shamir.reconstruct_many({"x": flipped}, 4)
    with pytest.raises(ConfigurationError):
        shamir.share(vals[0], [0, 1], 2)
    with pytest.raises(ConfigurationError):
        shamir.share(vals[0], [1, shamir.MAX_POINT + 1], 2)


def test_client_refuses_to_reveal_both_shares_of_a_peer() -> None:
    ss = PairwiseSecureSum()
    proc = ss.create(SPEC(10, 4))
    server = proc.new_round(2, list(range(4)))
    sessions = {c: proc.client_session(c) for c in range(4)}
    req = server.step(())
    for _ in range(3):  # advertise, share, mask
        assert isinstance(req, dict)
        for c, r in req.items():
            server.receive(c, sessions[c].step(r, Contribution(np.zeros(10))))
        req = server.step(())
    assert isinstance(req, dict)
    none = np.array([], "<u4")
    greedy = wire.encode(_UNMASK_REQ, 2, {"survivors": np.array([0, 1, 2], "<u4"),
                                          "dropped": np.array([1], "<u4"), "pair_seeds": none})
    with pytest.raises(UnmaskRefusedError, match="both"):
        sessions[0].step(greedy, None)
    # a pair seed of a peer it masked with would unmask the client itself
    seed_of_masked_peer = wire.encode(_UNMASK_REQ, 2, {"survivors": np.array([0], "<u4"),
                                                       "dropped": none,
                                                       "pair_seeds": np.array([1], "<u4")})
    with pytest.raises(UnmaskRefusedError, match="did not mask with"):
        sessions[1].step(seed_of_masked_peer, None)
    with pytest.raises(ProtocolViolationError):  # and it does not get a second chance
        sessions[0].step(req[0], None)


def test_bad_messages_are_rejected_before_touching_the_sum() -> None:
    ss = PairwiseSecureSum()
    proc = ss.create(SPEC(8, 4))
    server = proc.new_round(9, [0, 1, 2, 3])  # complete graph, t = 2
    sessions = {c: proc.client_session(c) for c in range(4)}
    req = server.step(())
    assert isinstance(req, dict)
    for c in range(4):
        server.receive(c, sessions[c].step(req[c], None))
    req = server.step(())
    assert isinstance(req, dict)
    replies = {c: sessions[c].step(req[c], None) for c in range(4)}
    # a ciphertext that fails authentication: corrupt one byte of client 0's shares
    msg = wire.decode(replies[0], wire.Schema(33, "s", (
        wire.Field(1, "ids", wire.FieldType.ARRAY, dtype="<u4"),
        wire.Field(2, "ciphertexts", wire.FieldType.BYTES),
        wire.Field(3, "b_commit", wire.FieldType.BYTES))))
    cts = bytearray(msg.raw("ciphertexts"))
    cts[20] ^= 1
    bad = wire.encode(msg.schema, 9, {**msg.values, "ciphertexts": bytes(cts)})
    server.receive(0, bad)  # the server cannot tell; the recipient will
    for c in (1, 2, 3):
        server.receive(c, replies[c])
    with pytest.raises(ProtocolViolationError, match="duplicate"):
        server.receive(1, replies[1])
    with pytest.raises(ProtocolViolationError, match="not selected"):
        server.receive(5, replies[1])
    req = server.step(())
    assert isinstance(req, dict)
    # the recipient cannot confirm client 0 and leaves it out of its masks
    y1 = wire.decode(sessions[1].step(req[1], Contribution(np.zeros(8))), _MASKED[32])
    assert list(y1.array("mask_peers")) == [2, 3]
    # masked vector of the wrong length or ring, or masked with peers it never heard of
    y = sessions[2].step(req[2], Contribution(np.zeros(8)))
    none = np.array([], "<u4")
    wrong_len = wire.encode(_MASKED[32], 9, {"y": np.zeros(5, "<u4"), "mask_peers": none})
    wrong_ring = wire.encode(_MASKED[64], 9, {"y": np.zeros(9, "<u8"), "mask_peers": none})
    stranger = wire.encode(_MASKED[32], 9, {"y": np.zeros(9, "<u4"),
                                            "mask_peers": np.array([7], "<u4")})
    before = server.acc.copy()
    with pytest.raises(MalformedMessageError, match="shape"):
        server.receive(2, wrong_len)
    with pytest.raises(MalformedMessageError):
        server.receive(2, wrong_ring)
    with pytest.raises(MalformedMessageError, match="never received"):
        server.receive(2, stranger)
    np.testing.assert_array_equal(server.acc, before)
    server.receive(2, y)
    other_round = proc.new_round(10, [0, 1, 2, 3])
    with pytest.raises((ProtocolViolationError, MalformedMessageError)):
        other_round.receive(2, y)


def test_configuration_is_checked_up_front() -> None:
    with pytest.raises(ConfigurationError, match="bounded"):
        PairwiseSecureSum().create(ValueSpec(length=4, max_clients=3))
    with pytest.raises(EncodingOverflowError, match="ring"):
        ring_for(ValueSpec(length=4, max_clients=10**6, linf_bound=1e9), precision=1e-12)
    with pytest.raises(ConfigurationError, match="dropout_rate"):
        PairwiseSecureSum(dropout_rate=0.6)
    with pytest.raises(ConfigurationError, match="0.9"):
        plan_graph(3, sparse=False, dropout=0.45, collusion=0.9)
    with pytest.raises(ConfigurationError, match="no threshold"):
        plan_graph(3, sparse=False, dropout=0.4, collusion=0.4)
    assert ring_for(SPEC(10, 100)).bits == 32
    assert ring_for(SPEC(10, 100), precision=1e-12).bits == 64


def test_graph_and_threshold() -> None:
    plan = plan_graph(100, sparse=True, dropout=0.2, collusion=1 / 3)
    assert plan.degree == 54 and plan.threshold == 34 and not plan.complete  # Bell et al.
    g = harary_graph(list(range(100)), plan.degree)
    assert all(len(v) == 54 for v in g.values())
    assert all(u in g[v] for u in g for v in g[u])  # symmetric
    full = plan_graph(10, sparse=False, dropout=0.2, collusion=1 / 3)
    assert full.complete and full.degree == 9 and full.threshold == 4  # ⌊10/3⌋ + 1


def test_upload_is_four_bytes_per_parameter() -> None:
    out, *_ = _run(PairwiseSecureSum(sparse=True), 20, 50_000, {}, seed=0)
    per_client_upload = out.bytes_up / 20 / 50_000
    assert 4.0 <= per_client_upload < 4.2


@settings(max_examples=120, deadline=None)
@given(stage=st.integers(1, 4), **MUTATION)
def test_fuzz_server_and_client_decoders(stage: int, pos: int, byte: int, op: str,
                                         blob: bytes) -> None:
    ss = PairwiseSecureSum()
    proc = ss.create(SPEC(6, 3))
    server = proc.new_round(1, [0, 1, 2])
    sessions = {c: proc.client_session(c) for c in range(3)}
    req = server.step(())
    for _ in range(stage - 1):
        assert isinstance(req, dict)
        for c, r in req.items():
            server.receive(c, sessions[c].step(r, Contribution(np.zeros(6))))
        req = server.step(())
    assert isinstance(req, dict)
    good_reply = sessions[0].step(req[0], Contribution(np.zeros(6)))
    for target, good in (("server", good_reply), ("client", req[1])):
        b = mutate(good, pos, byte, op, blob)
        with contextlib.suppress(PrivflError):
            if target == "server":
                server.receive(0, bytes(b))
            else:
                sessions[1].step(bytes(b), Contribution(np.zeros(6)))


def test_a_share_corrupted_one_way_costs_one_pair_seed_not_the_sum() -> None:
    """A sender corrupts one ciphertext: only its recipient notices. The recipient leaves that
    pair mask out, the server sees the one-sided pair in the listed peers, the recipient gives
    that single pair seed, and the sum over all clients is exact."""
    ss = PairwiseSecureSum()
    proc = ss.create(SPEC(5, 6))
    rng = np.random.default_rng(3)
    vals = {c: rng.uniform(-1, 1, 5) for c in range(6)}

    class Corrupting:
        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner = inner

        def step(self, request, contribution):  # type: ignore[no-untyped-def]
            reply = self.inner.step(request, contribution)
            if wire.peek_kind(reply) == 33:  # shares: flip a byte of the last ciphertext
                b = bytearray(reply)
                b[-60] ^= 1
                return bytes(b)
            return reply

    server = proc.new_round(1, list(range(6)))
    sessions = {c: proc.client_session(c) for c in range(6)}
    sessions[0] = Corrupting(sessions[0])  # type: ignore[assignment]
    out = InMemoryTransport().run_round(server, sessions,
                                        {c: Contribution(vals[c]) for c in range(6)})
    assert out.dropped == {}
    assert server._one_sided() == [(0, 5)]  # type: ignore[attr-defined]
    ref = sum(vals[c] for c in range(6))
    np.testing.assert_allclose(out.result.weighted_sum, ref, atol=1e-6)
