from __future__ import annotations

import numpy as np
import pytest

from privfl.core import wire
from privfl.core.securesum import SecureSum
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport
from privfl.errors import ConfigurationError, MalformedMessageError
from privfl.secagg.multiserver import _INPUT, MultiServerSecureSum

from ..core.contract import SecureSumContract


class TestTwoServers(SecureSumContract):
    def make_secure_sum(self) -> SecureSum:
        return MultiServerSecureSum(2)

    def make_spec(self, length: int, max_clients: int) -> ValueSpec:
        return ValueSpec(length=length, max_clients=max_clients, linf_bound=1.0)


class TestThreeServers(TestTwoServers):
    def make_secure_sum(self) -> SecureSum:
        return MultiServerSecureSum(3)


def test_each_server_sees_only_a_uniform_share_and_upload_is_4_bytes() -> None:
    from scipy import stats

    d = 50_000
    proc = MultiServerSecureSum(2).create(ValueSpec(length=d, max_clients=1, linf_bound=1.0))
    server = proc.new_round(1, [0])
    req = server.step(())
    assert isinstance(req, dict)
    up = proc.client_session(0).step(req[0], Contribution(np.zeros(d)))
    assert 4.0 <= len(up) / d < 4.01
    server.receive(0, up)
    for total in server.totals:  # an all-zero input: each server's share must look uniform
        assert stats.kstest(total.astype(np.float64) / 2**32, "uniform").pvalue > 1e-3


def test_tampered_part_is_rejected_before_any_sum_changes() -> None:
    proc = MultiServerSecureSum(3).create(ValueSpec(length=10, max_clients=2, linf_bound=1.0))
    server = proc.new_round(2, [0, 1])
    req = server.step(())
    assert isinstance(req, dict)
    up = proc.client_session(0).step(req[0], Contribution(np.full(10, 0.5)))
    msg = wire.decode(up, _INPUT)
    bad = bytearray(msg.raw("sealed_vector"))
    bad[3] ^= 1
    with pytest.raises(MalformedMessageError, match="authentication"):
        server.receive(0, wire.encode(_INPUT, 2, {**msg.values, "sealed_vector": bytes(bad)}))
    assert all(not t.any() for t in server.totals)
    with pytest.raises(MalformedMessageError, match="size"):
        server.receive(0, wire.encode(_INPUT, 2, {**msg.values, "sealed_seeds": b"x"}))
    server.receive(0, up)


def test_dropouts_cost_nothing() -> None:
    d, n = 100, 8
    proc = MultiServerSecureSum(2).create(ValueSpec(length=d, max_clients=n, linf_bound=1.0))
    rng = np.random.default_rng(0)
    vals = {c: rng.uniform(-1, 1, d) for c in range(n)}
    server = proc.new_round(1, list(range(n)))
    from privfl.core.transport import ScheduledDropout

    out = InMemoryTransport(ScheduledDropout({0: set(range(1, n))})).run_round(
        server, {c: proc.client_session(c) for c in range(n)},
        {c: Contribution(vals[c]) for c in range(n)})
    np.testing.assert_allclose(out.result.weighted_sum, vals[0], atol=1e-6)


def test_needs_two_servers() -> None:
    with pytest.raises(ConfigurationError, match="servers"):
        MultiServerSecureSum(1)
