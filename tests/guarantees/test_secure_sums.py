"""Regression tests for issue 8, secure sums: each attacks a guarantee the docs state.

Every test here failed on the code before the fix (silently wrong sums, crashes deep inside
``cryptography`` or rounds lost for everyone).
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.core import wire
from privfl.core.ring import ring_for
from privfl.core.securesum import PlainSecureSum
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport
from privfl.errors import (
    BoundViolationError,
    ConfigurationError,
    EncodingOverflowError,
    ProtocolAbortError,
)
from privfl.secagg.keyagreement import SMALL_ORDER_U
from privfl.secagg.multiserver import _INPUT as _MS_INPUT
from privfl.secagg.multiserver import MultiServerSecureSum
from privfl.secagg.pairwise import _KEYS, _MASKED, PairwiseSecureSum

RING_SUMS = [lambda **kw: PairwiseSecureSum(**kw),
             lambda **kw: PairwiseSecureSum(sparse=True, **kw),
             lambda **kw: MultiServerSecureSum(2, **kw)]


class _RoundUp:
    """Stochastic rounding that always rounds up: the worst case for wrap-around."""

    def random(self, shape: object) -> np.ndarray:
        return np.full(shape, 1.0 - 2.0**-53)  # type: ignore[arg-type]


class _Tamper:
    """A client session whose replies of one message kind are rewritten on the way."""

    def __init__(self, inner, kind, edit):  # type: ignore[no-untyped-def]
        self.inner, self.kind, self.edit = inner, kind, edit

    def step(self, request, contribution):  # type: ignore[no-untyped-def]
        reply = self.inner.step(request, contribution)
        return self.edit(reply) if wire.peek_kind(reply) == self.kind else reply


def _run(ss, spec, values, weights=None, wrap=None, round_id=1):  # type: ignore[no-untyped-def]
    proc = ss.create(spec)
    ids = sorted(values)
    server = proc.new_round(round_id, ids)
    sessions = {c: proc.client_session(c) for c in ids}
    for c, f in (wrap or {}).items():
        sessions[c] = f(sessions[c])
    weights = weights or {c: 1.0 for c in ids}
    return InMemoryTransport().run_round(
        server, sessions, {c: Contribution(values[c], weights[c]) for c in ids})


# --- item 1: the 64-bit ring must not wrap -------------------------------------------------
@pytest.mark.parametrize("make", RING_SUMS)
def test_item1_maximal_sum_on_a_64_bit_ring_does_not_wrap(make) -> None:  # type: ignore[no-untyped-def]
    spec = ValueSpec(length=3, max_clients=4, linf_bound=1.0)
    out = _run(make(precision=1e-12), spec, {c: np.ones(3) for c in range(4)})
    np.testing.assert_allclose(out.result.weighted_sum, [4.0, 4.0, 4.0], atol=1e-9)
    assert out.result.total_weight == pytest.approx(4.0, abs=1e-9)


def test_item1_2048_clients_switch_to_64_bits_without_wrapping() -> None:
    ring = ring_for(ValueSpec(length=1, max_clients=2048, linf_bound=1.0))
    assert ring.bits == 64
    one = ring.encode(np.array([1.0, -1.0]), _RoundUp())  # type: ignore[arg-type]
    total = np.zeros(2, ring.dtype)
    for _ in range(2048):
        total = total + one  # mod 2^64
    np.testing.assert_allclose(ring.decode(total), [2048.0, -2048.0], atol=1e-6)


@settings(max_examples=300, deadline=None)
@given(n=st.integers(1, 5000), log_bound=st.integers(-8, 12), frac=st.sampled_from(
    [1.0, 0.5, 0.75, 1 - 2**-20, 1 / 3]), weight=st.sampled_from([1.0, 0.5, 2.0, 0.3]),
    precision=st.sampled_from([1e-3, 1e-6, 1e-9, 1e-12, 2**-20]))
def test_item1_no_accepted_input_can_wrap_any_ring(n: int, log_bound: int, frac: float,
                                                   weight: float, precision: float) -> None:
    """The sweep of the issue: every ring ring_for returns holds the worst case exactly."""
    spec = ValueSpec(length=1, max_clients=n, linf_bound=2.0**log_bound * frac,
                     max_weight=weight)
    try:
        ring = ring_for(spec, precision=precision)
    except EncodingOverflowError:
        return
    v = ring.value_bound  # the largest value encode accepts
    worst = math.floor(Fraction(v) * 2**ring.frac_bits) + 1  # |⌊v·2^f + u⌋| for u < 1
    assert n * worst <= 2 ** (ring.bits - 1) - 1  # the sum of n worst values still decodes
    assert v >= float(Fraction(spec.coordinate_bound or 0) * weight)  # accepts what it promised
    word = ring.encode(np.array([v, -v]), _RoundUp())  # type: ignore[arg-type]
    total = (word.astype(object) * n) % 2**ring.bits
    decoded = ring.decode(np.array(total, dtype=ring.dtype))
    assert decoded[0] > 0 > decoded[1]


# --- item 2: the check's slack is inside the ring's bound ------------------------------------
@pytest.mark.parametrize("make", RING_SUMS[::2])
def test_item2_values_within_the_check_slack_do_not_wrap(make) -> None:  # type: ignore[no-untyped-def]
    bound = (2**31 - 4) / (3 * 2**10) * (1 - 1e-7)  # a 32-bit ring with almost no headroom
    spec = ValueSpec(length=2, max_clients=3, linf_bound=bound)
    v = np.full(2, bound * (1 + 0.9e-6))  # passes check_value's 1e-6 slack
    out = _run(make(precision=1e-3), spec, {c: v for c in range(3)})
    np.testing.assert_allclose(out.result.weighted_sum, 3 * v, rtol=1e-9)


def test_item2_the_ring_itself_refuses_a_value_past_its_bound() -> None:
    ring = ring_for(ValueSpec(length=1, max_clients=3, linf_bound=1.0))
    with pytest.raises(BoundViolationError, match="could wrap"):
        ring.encode(np.array([ring.value_bound * 1.001]), np.random.default_rng(0))
    with pytest.raises(BoundViolationError):
        ring.encode(np.array([np.nan]), np.random.default_rng(0))


# --- item 3: concurrent multi-server rounds keep their own sums -------------------------------
def test_item3_two_open_multiserver_rounds_do_not_share_a_sum() -> None:
    proc = MultiServerSecureSum(2).create(ValueSpec(length=2, max_clients=2, linf_bound=1.0))
    a = proc.new_round(1, [0, 1])
    req_a = a.step(())
    b = proc.new_round(2, [0])  # opened while round 1 is still collecting
    req_b = b.step(())
    assert isinstance(req_a, dict) and isinstance(req_b, dict)
    b.receive(0, proc.client_session(0).step(req_b[0], Contribution(np.full(2, 0.9))))
    for c in (0, 1):
        a.receive(c, proc.client_session(c).step(req_a[c], Contribution(np.full(2, 0.5))))
    ra, rb = a.step(()), b.step(())
    np.testing.assert_allclose(ra.weighted_sum, [1.0, 1.0], atol=1e-6)  # type: ignore[union-attr]
    np.testing.assert_allclose(rb.weighted_sum, [0.9, 0.9], atol=1e-6)  # type: ignore[union-attr]


# --- item 4: a low-order key excludes one client, it does not kill the round -----------------
def _zero_key(field: str, key: bytes = bytes(32)):  # type: ignore[no-untyped-def]
    def edit(reply: bytes) -> bytes:
        msg = wire.decode(reply, _KEYS)
        return wire.encode(_KEYS, msg.round_id, {**msg.values, field: key})
    return edit


# the all-zero key, and a point of order 8 written non-canonically (top bit set)
_LOW_ORDER_KEYS = [bytes(32), (min(SMALL_ORDER_U - {0, 1, 2**255 - 20})
                               | 1 << 255).to_bytes(32, "little")]


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("field", ["c_pk", "s_pk"])
@pytest.mark.parametrize("key", _LOW_ORDER_KEYS, ids=["zero", "order8-top-bit"])
def test_item4_all_zero_x25519_key_excludes_its_client(sparse: bool, field: str,
                                                       key: bytes) -> None:
    vals = {c: np.full(3, 0.1 * (c + 1)) for c in range(6)}
    out = _run(PairwiseSecureSum(sparse=sparse), ValueSpec(length=3, max_clients=6,
                                                          linf_bound=1.0), vals,
               wrap={2: lambda s: _Tamper(s, _KEYS.kind, _zero_key(field, key))})
    assert "low-order" in out.dropped[2]
    np.testing.assert_allclose(out.result.weighted_sum,
                               sum(vals[c] for c in range(6) if c != 2), atol=1e-6)


def test_item4_all_zero_ephemeral_key_excludes_a_multiserver_client() -> None:
    def edit(reply: bytes) -> bytes:
        msg = wire.decode(reply, _MS_INPUT)
        return wire.encode(_MS_INPUT, msg.round_id, {**msg.values, "eph_pk": bytes(32)})

    vals = {c: np.full(3, 0.1 * (c + 1)) for c in range(4)}
    out = _run(MultiServerSecureSum(2), ValueSpec(length=3, max_clients=4, linf_bound=1.0),
               vals, wrap={1: lambda s: _Tamper(s, _MS_INPUT.kind, edit)})
    assert "low-order" in out.dropped[1]
    np.testing.assert_allclose(out.result.weighted_sum, vals[0] + vals[2] + vals[3], atol=1e-6)


# --- item 5: a corrupted key advertisement never yields a wrong sum ---------------------------
def _flip(field: str, byte: int):  # type: ignore[no-untyped-def]
    def edit(reply: bytes) -> bytes:
        msg = wire.decode(reply, _KEYS)
        raw = bytearray(msg.raw(field))
        raw[byte] ^= 0x10
        return wire.encode(_KEYS, msg.round_id, {**msg.values, field: bytes(raw)})
    return edit


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("field", ["s_pk", "c_pk"])
def test_item5_flipped_key_byte_is_caught_by_key_confirmation(sparse: bool, field: str) -> None:
    rng = np.random.default_rng(5)
    vals = {c: rng.uniform(-1, 1, 16) for c in range(8)}
    out = _run(PairwiseSecureSum(sparse=sparse), ValueSpec(length=16, max_clients=8,
                                                          linf_bound=1.0), vals,
               wrap={3: lambda s: _Tamper(s, _KEYS.kind, _flip(field, 7))})
    # Every neighbour of client 3 sees keys that 3 does not hold: the pairs are left out on both
    # sides, 3 confirms nobody and refuses, and the others' sum is exact.
    assert "confirmed" in out.dropped[3]
    assert out.result.contributors == (0, 1, 2, 4, 5, 6, 7)
    np.testing.assert_allclose(out.result.weighted_sum,
                               sum(vals[c] for c in out.result.contributors), atol=1e-6)


def test_item5_impossible_total_weight_aborts_instead_of_releasing_garbage() -> None:
    def edit(reply: bytes) -> bytes:  # a masked upload altered on the way: the weight slot
        msg = wire.decode(reply, _MASKED[32])
        y = msg.array("y").copy()
        y[-1] ^= np.uint32(1 << 31)  # ± 2^31: far outside (0, 5] whatever y was
        return wire.encode(_MASKED[32], msg.round_id, {**msg.values, "y": y})

    vals = {c: np.full(4, 0.2) for c in range(5)}
    with pytest.raises(ProtocolAbortError, match="total weight"):
        _run(PairwiseSecureSum(), ValueSpec(length=4, max_clients=5, linf_bound=1.0), vals,
             wrap={0: lambda s: _Tamper(s, _MASKED[32].kind, edit)})


# --- item 6: one bad client is excluded; bad ids are refused up front ------------------------
@pytest.mark.parametrize("make", [*RING_SUMS, lambda **kw: PlainSecureSum()])
def test_item6_an_over_bound_value_excludes_only_its_client(make) -> None:  # type: ignore[no-untyped-def]
    spec = ValueSpec(length=4, max_clients=5, l2_bound=1.0)
    vals = {c: np.full(4, 0.25) for c in range(5)}
    vals[4] = np.full(4, 5.0)  # far over the L2 bound
    out = _run(make(), spec, vals)
    assert "l2_bound" in out.dropped[4]
    np.testing.assert_allclose(out.result.weighted_sum, np.full(4, 1.0), atol=1e-6)


@pytest.mark.parametrize("make", [*RING_SUMS, lambda **kw: PlainSecureSum()])
def test_item6_client_ids_beyond_u32_are_refused_before_the_round(make) -> None:  # type: ignore[no-untyped-def]
    proc = make().create(ValueSpec(length=2, max_clients=3, linf_bound=1.0))
    with pytest.raises(ConfigurationError, match="2\\*\\*32"):
        proc.new_round(1, [0, 2**32])
    with pytest.raises(ConfigurationError, match="2\\*\\*32"):
        proc.new_round(1, [0, -1])
