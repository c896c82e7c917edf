"""The issue's semi-honest attack (colluding holders + dropped neighbours), and the client checks.

n = 20 SecAgg+ clients now get k = 12, t = 7 from γ = 1/3, δ = 0.2 of the population: ⌊γn⌋ = 6
colluders and ⌊δn⌋ = 4 dropped clients together are fewer than k, so no honest client can lose
all its honest neighbours. The old attack (6 colluding holders + 6 dropped neighbours of the
victim) exceeds δ, and still fails: the server's own check aborts the round, and a lying server
that skips the check meets the victim's refusal to unmask with fewer than t survivors.
"""

from __future__ import annotations

import numpy as np
import pytest

from privfl.core import wire
from privfl.core.spec import Contribution, ValueSpec
from privfl.errors import ClientRefusedError, ProtocolAbortError
from privfl.secagg import shamir
from privfl.secagg.keyagreement import exchange
from privfl.secagg.pairwise import (
    _MASK_REQ,
    _MASKED,
    _SHARE_REQ,
    _UNMASK_REQ,
    PairwiseSecureSum,
    UnmaskRefusedError,
    _kdf,
)
from privfl.secagg.prg import PAIR_MASK, SELF_MASK, expand_mask

N, D, ROUND = 20, 16, 3


class Harness:
    """Drives one SecAgg+ round stage by stage, as a server that may deviate."""

    def __init__(self, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.ss = PairwiseSecureSum(sparse=True)
        self.proc = self.ss.create(ValueSpec(length=D, max_clients=N, linf_bound=1.0))
        self.server = self.proc.new_round(ROUND, list(range(N)))
        self.sessions = {c: self.proc.client_session(c) for c in range(N)}
        self.x = {c: rng.uniform(-1, 1, D) for c in range(N)}
        self.y: dict[int, np.ndarray] = {}

    def to_masked_input(self) -> dict[int, bytes]:
        """Keys advertised and shared by everyone; returns the masked-input requests."""
        server = self.server
        for _ in range(2):
            req = server.step(())
            assert isinstance(req, dict)
            for c, r in req.items():
                server.receive(c, self.sessions[c].step(r, None))
        req = server.step(())
        assert isinstance(req, dict)
        return dict(req)

    def upload(self, requests: dict[int, bytes], clients: set[int]) -> None:
        for c in sorted(clients):
            reply = self.sessions[c].step(requests[c], Contribution(self.x[c]))
            self.y[c] = wire.decode(reply, _MASKED[32]).array("y")
            self.server.receive(c, reply)

    @property
    def graph(self) -> dict[int, tuple[int, ...]]:
        return self.server.graph  # type: ignore[attr-defined, no-any-return]


def test_derived_parameters_at_the_attack_size() -> None:
    plan = PairwiseSecureSum(sparse=True).plan(N)
    assert (plan.degree, plan.threshold, plan.colluders, plan.dropouts) == (12, 7, 6, 4)


def test_the_issue_attack_exceeds_the_assumptions_and_is_refused() -> None:
    """6 colluding holders + 6 dropped neighbours: the round aborts; the victim never unmasks."""
    h = Harness()
    requests = h.to_masked_input()
    victim = 0
    nbrs = list(h.graph[victim])
    colluders, dropped = set(nbrs[:6]), set(nbrs[6:12])
    assert len(dropped) > h.ss.plan(N).dropouts  # beyond δ: the stated assumption is broken
    h.upload(requests, set(range(N)) - dropped)
    with pytest.raises(ProtocolAbortError, match=f"only 6 neighbours of client {victim}"):
        h.server.step(())
    # a server that skips its own check and asks anyway
    lie = wire.encode(_UNMASK_REQ, ROUND, {
        "survivors": np.array(sorted(colluders | {victim}), "<u4"),
        "dropped": np.array(sorted(dropped), "<u4"), "pair_seeds": np.array([], "<u4")})
    with pytest.raises(UnmaskRefusedError, match="6 surviving neighbours besides itself"):
        h.sessions[victim].step(lie, None)


def test_within_the_assumptions_the_coalition_learns_nothing_about_the_victim() -> None:
    """6 colluders + 4 dropped neighbours (⌊γn⌋, ⌊δn⌋): exact sum, victim's input still masked."""
    h = Harness(seed=1)
    requests = h.to_masked_input()
    victim = 0
    nbrs = list(h.graph[victim])
    colluders, dropped = set(nbrs[:6]), set(nbrs[6:10])
    honest_survivors = set(nbrs[10:])
    h.upload(requests, set(range(N)) - dropped)
    req = h.server.step(())
    assert isinstance(req, dict)
    for c, r in req.items():
        h.server.receive(c, h.sessions[c].step(r, None))
    result = h.server.step(())
    keep = sorted(set(range(N)) - dropped)
    np.testing.assert_allclose(result.weighted_sum, sum(h.x[c] for c in keep),  # type: ignore[union-attr]
                               atol=1e-4)
    # everything the server and the colluders hold: b_v, the dropped neighbours' keys, the
    # colluders' pair seeds with the victim
    server = h.server
    ring = server.cfg.ring  # type: ignore[attr-defined]
    acc = h.y[victim].copy()
    scratch = np.empty_like(acc)
    b = shamir.reconstruct(server.shares_of("b", victim), server.plan.threshold)  # type: ignore[attr-defined]
    expand_mask(b, len(acc), acc.dtype, purpose=SELF_MASK, round_id=ROUND, out=scratch)
    acc -= scratch
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    known: dict[int, bytes] = {}
    for w in dropped:
        sk = X25519PrivateKey.from_private_bytes(
            shamir.reconstruct(server.shares_of("sk", w), server.plan.threshold))  # type: ignore[attr-defined]
        known[w] = _kdf(exchange(sk, server.keys[victim][1], "pk"), b"mask", ROUND)  # type: ignore[attr-defined]
    for c in colluders:
        known[c] = h.sessions[c]._pair_seed(victim)  # type: ignore[attr-defined]
    for w, seed in known.items():
        expand_mask(seed, len(acc), acc.dtype, purpose=PAIR_MASK, round_id=ROUND, out=scratch)
        acc = acc - scratch if victim < w else acc + scratch
    guess = ring.decode(acc)[:-1]
    assert not np.allclose(guess, h.x[victim], atol=0.5)  # the honest pair masks remain
    # ...and they are exactly what is missing: with them, the coalition would have x_v
    for w in honest_survivors:
        seed = h.sessions[w]._pair_seed(victim)  # type: ignore[attr-defined]
        expand_mask(seed, len(acc), acc.dtype, purpose=PAIR_MASK, round_id=ROUND, out=scratch)
        acc = acc - scratch if victim < w else acc + scratch
    np.testing.assert_allclose(ring.decode(acc)[:-1], h.x[victim], atol=1e-4)
    # the report names the round's parameters and bounds
    stated = h.ss.trust_assumption().statement
    for part in ("k=12, t=7", "n=20", "γ=0.333, δ=0.2", "Pr[an input revealed]", "Pr[abort]"):
        assert part in stated


def _edit(message: bytes, schema: wire.Schema, **changes: object) -> bytes:
    msg = wire.decode(message, schema)
    return wire.encode(schema, msg.round_id, {**msg.values, **changes})


def test_client_refuses_a_threshold_or_degree_other_than_derived() -> None:
    h = Harness(seed=2)
    req = h.server.step(())
    assert isinstance(req, dict)
    for c, r in req.items():
        h.server.receive(c, h.sessions[c].step(r, None))
    req = h.server.step(())
    assert isinstance(req, dict)
    with pytest.raises(ClientRefusedError, match="k=12, t=7"):
        h.sessions[0].step(_edit(req[0], _SHARE_REQ, threshold=3), None)
    # a lie about n to lower t: the neighbour count gives it away
    low = h.ss.plan(13)
    assert low.threshold < 7 and low.degree < 12
    with pytest.raises(ClientRefusedError, match=f"k={low.degree}, t={low.threshold}"):
        h.sessions[1].step(_edit(req[1], _SHARE_REQ, selected=13, threshold=low.threshold), None)


def test_client_refuses_a_masked_input_request_with_fewer_than_t_neighbours() -> None:
    h = Harness(seed=3)
    requests = h.to_masked_input()
    msg = wire.decode(requests[5], _MASK_REQ)
    ids = msg.array("ids")
    size = len(msg.raw("ciphertexts")) // len(ids)
    cut = _edit(requests[5], _MASK_REQ, ids=ids[:6], ciphertexts=msg.raw("ciphertexts")[:6 * size])
    with pytest.raises(ClientRefusedError, match="names 6 live neighbours"):
        h.sessions[5].step(cut, Contribution(h.x[5]))
