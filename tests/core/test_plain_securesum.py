from __future__ import annotations

import numpy as np
import pytest

from privfl.core.securesum import PlainSecureSum, SecureSum
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport, RandomDropout
from privfl.errors import (
    BoundViolationError,
    ConfigurationError,
    MalformedMessageError,
    ProtocolAbortError,
    ShapeMismatchError,
)

from .contract import SecureSumContract


class TestPlainContract(SecureSumContract):
    def make_secure_sum(self) -> SecureSum:
        return PlainSecureSum()


class TestPlainFloat64Contract(SecureSumContract):
    atol = 1e-12

    def make_secure_sum(self) -> SecureSum:
        return PlainSecureSum()

    def make_spec(self, length: int, max_clients: int) -> ValueSpec:
        return ValueSpec(length=length, max_clients=max_clients, dtype="float64")


def test_float32_wire_is_four_bytes_per_parameter() -> None:
    process = PlainSecureSum().create(ValueSpec(length=10_000, max_clients=2))
    server = process.new_round(0, [0, 1])
    req = server.step(())
    assert isinstance(req, dict)
    reply = process.client_session(0).step(req[0], Contribution(np.zeros(10_000, np.float32)))
    assert 40_000 <= len(reply) < 40_100


def test_client_validates_its_input() -> None:
    process = PlainSecureSum().create(ValueSpec(length=4, max_clients=1, l2_bound=1.0))
    server = process.new_round(0, [0])
    req = server.step(())
    assert isinstance(req, dict)
    client = process.client_session(0)
    with pytest.raises(ShapeMismatchError):
        client.step(req[0], Contribution(np.zeros(5, np.float32)))
    with pytest.raises(BoundViolationError, match="l2_bound"):
        client.step(req[0], Contribution(np.ones(4, np.float32)))
    with pytest.raises(BoundViolationError, match="weight"):
        client.step(req[0], Contribution(np.zeros(4, np.float32), weight=2.0))
    with pytest.raises(MalformedMessageError):
        client.step(b"junk", Contribution(np.zeros(4, np.float32)))


def test_weight_out_of_range_is_rejected_by_the_server() -> None:
    from privfl.core import wire
    from privfl.core.securesum import _INPUT32

    process = PlainSecureSum().create(ValueSpec(length=2, max_clients=1, max_weight=1.0))
    server = process.new_round(4, [0])
    server.step(())
    msg = wire.encode(_INPUT32, 4, {"weight": 5.0, "value": np.zeros(2, np.float32)})
    with pytest.raises(MalformedMessageError, match="weight"):
        server.receive(0, msg)
    msg = wire.encode(_INPUT32, 4, {"weight": 1.0, "value": np.zeros(3, np.float32)})
    with pytest.raises(MalformedMessageError, match="shape"):
        server.receive(0, msg)


def test_new_round_validation() -> None:
    process = PlainSecureSum().create(ValueSpec(length=2, max_clients=2))
    with pytest.raises(ProtocolAbortError):
        process.new_round(0, [])
    with pytest.raises(ConfigurationError, match="distinct"):
        process.new_round(0, [1, 1])
    with pytest.raises(ConfigurationError, match="max_clients"):
        process.new_round(0, [0, 1, 2])


def test_random_dropout_statistics() -> None:
    rng = np.random.default_rng(0)
    process = PlainSecureSum().create(ValueSpec(length=3, max_clients=200))
    server = process.new_round(0, list(range(200)))
    sessions = {c: process.client_session(c) for c in range(200)}
    contribs = {c: Contribution(np.ones(3, np.float32)) for c in range(200)}
    out = InMemoryTransport(RandomDropout(0.3, rng)).run_round(server, sessions, contribs)
    assert 40 <= len(out.dropped) <= 80
    assert out.result.weighted_sum[0] == pytest.approx(200 - len(out.dropped))


@pytest.mark.parametrize("kwargs", [
    {"length": 0, "max_clients": 1}, {"length": 1, "max_clients": 0},
    {"length": 1, "max_clients": 1, "l2_bound": -1.0},
    {"length": 1, "max_clients": 1, "max_weight": 0.0},
    {"length": 1, "max_clients": 1, "dtype": "int8"},
])
def test_value_spec_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        ValueSpec(**kwargs)  # type: ignore[arg-type]
