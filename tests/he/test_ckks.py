from __future__ import annotations

import contextlib
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from privfl.core import wire
from privfl.core.securesum import SecureSum
from privfl.core.spec import Contribution, ValueSpec
from privfl.core.transport import InMemoryTransport
from privfl.errors import (
    BoundViolationError,
    ConfigurationError,
    DecryptionError,
    EncodingOverflowError,
    MalformedMessageError,
    PrivflError,
    ProtocolAbortError,
    ProtocolViolationError,
)
from privfl.he import COMPACT, STANDARD, CKKSParams, CKKSSecureSum, ClientKeys, derive_params
from privfl.he.keys import shm_path
from privfl.he.securesum import _INPUT

from ..core.contract import SecureSumContract
from ..fuzzing import MUTATION, mutate


def _spec(d: int, n: int) -> ValueSpec:
    return ValueSpec(length=d, max_clients=n, linf_bound=1.0)


def _made(ss: CKKSSecureSum, spec: ValueSpec):  # type: ignore[no-untyped-def]
    """A server process and its simulated clients' side (the factory provisioned the keys)."""
    proc = ss.create(spec)
    return proc, ss.client(proc.client_config())


class TestCKKSCompactContract(SecureSumContract):
    def make_secure_sum(self) -> SecureSum:
        return CKKSSecureSum()

    def make_spec(self, length: int, max_clients: int) -> ValueSpec:
        return _spec(length, max_clients)


class TestCKKSStandardContract(SecureSumContract):
    # STANDARD's fixed scale 2^40 bounds a decryption's error by 10·21.5·8192/2^40 ≈ 1.6e-6 for
    # 10 clients, so its exact grid is 2^-18 and the sum errs by at most 10·2^-18 ≈ 3.8e-5.
    atol = 4e-5

    def make_secure_sum(self) -> SecureSum:
        return CKKSSecureSum(STANDARD)

    def make_spec(self, length: int, max_clients: int) -> ValueSpec:
        return _spec(length, max_clients)


def _round(ss: CKKSSecureSum, values: dict[int, np.ndarray], weights: dict[int, float]):  # type: ignore[no-untyped-def]
    d = len(next(iter(values.values())))
    proc, side = _made(ss, _spec(d, len(values)))
    server = proc.new_round(3, sorted(values))
    sessions = {c: side.session(c) for c in values}
    log: list[bytes] = []

    class Recording:
        def __init__(self, inner):  # type: ignore[no-untyped-def]
            self.inner = inner

        def step(self, request: bytes, contribution):  # type: ignore[no-untyped-def]
            reply = self.inner.step(request, contribution)
            log.append(reply)
            return reply

    out = InMemoryTransport().run_round(
        server, {c: Recording(s) for c, s in sessions.items()},
        {c: Contribution(values[c], weights[c]) for c in values})
    return out, side, server, log


def test_ten_clients_sum_within_1e6_and_compact_size() -> None:
    rng = np.random.default_rng(0)
    d = 40_000
    values = {c: rng.uniform(-1, 1, d) for c in range(10)}
    weights = {c: float(rng.uniform(0.05, 1.0)) for c in range(10)}
    out, *_ = _round(CKKSSecureSum(), values, weights)
    ref = sum(weights[c] * values[c] for c in range(10))
    assert np.abs(out.result.weighted_sum - ref).max() <= 1e-6
    assert out.result.total_weight == pytest.approx(sum(weights.values()), abs=1e-6)
    upload = out.bytes_up / d  # 10 uploads + 2 decrypted sums (8 B/param each)
    assert (upload - 2 * 8) / 10 <= 6.1


def test_server_holds_no_secret_key_and_receives_none() -> None:
    keys = ClientKeys.generate(derive_params(_spec(5000, 3)))
    ss = CKKSSecureSum(keys=keys)
    rng = np.random.default_rng(1)
    out, proc, server, log = _round(ss, {c: rng.uniform(-1, 1, 5000) for c in range(3)},
                                    {c: 1.0 for c in range(3)})
    engine = server.engine
    assert engine.keys is None and not hasattr(engine.codec, "_encryptor")
    sctx = keys.server_context()
    assert not hasattr(sctx, "_secret") and set(vars(type(sctx))) >= {"params", "key_id"}
    master = keys.export_secret(i_understand_this_reveals_the_key=True)[16:]
    # The round key's raw coefficients: SEAL's stream of it, windows of its data.
    path = shm_path("test-sk")
    keys.round_key(3).save(str(path))
    members, _ = engine.codec._members(path.read_bytes())
    path.unlink()
    coeffs = members[-8 * keys.params.poly_modulus_degree:]
    windows = [coeffs[i:i + 24] for i in range(0, len(coeffs) - 24, len(coeffs) // 16)]
    sent_to_server = b"".join(log) + sctx.to_bytes()
    assert not any(w in sent_to_server for w in windows)
    assert master not in sent_to_server and len(windows) >= 15


def test_secret_is_never_serialized_by_default() -> None:
    keys = ClientKeys.generate(COMPACT)
    with pytest.raises(TypeError, match="secret"):
        pickle.dumps(keys)
    with pytest.raises(ConfigurationError, match="i_understand"):
        keys.export_secret()
    std = ClientKeys.generate(STANDARD)
    import tenseal as ts

    assert not ts.context_from(std.server_context().tenseal_public).has_secret_key()


def test_other_parameters_and_other_keys_are_rejected() -> None:
    rng = np.random.default_rng(2)
    d = 3000
    spec = _spec(d, 2)
    ss_a = CKKSSecureSum()
    proc_a, side_a = _made(ss_a, spec)
    server = proc_a.new_round(1, [0, 1])
    req = server.step(())
    assert isinstance(req, dict)
    # another key, other label
    proc_b, side_b = _made(CKKSSecureSum(), spec)
    srv_b = proc_b.new_round(1, [0, 1])
    req_b = srv_b.step(())
    assert isinstance(req_b, dict)
    foreign = side_b.session(0).step(req_b[0], Contribution(rng.uniform(-1, 1, d)))
    with pytest.raises(MalformedMessageError, match="another key"):
        server.receive(0, foreign)
    # other parameters (N = 8192)
    keys8k = ClientKeys.generate(CKKSParams(8192, (38, 20), 32))
    proc_c, side_c = _made(CKKSSecureSum(CKKSParams(8192, (38, 20), 32), keys=None), spec)
    del keys8k
    srv_c = proc_c.new_round(1, [0, 1])
    req_c = srv_c.step(())
    assert isinstance(req_c, dict)
    other = side_c.session(0).step(req_c[0], Contribution(rng.uniform(-1, 1, d)))
    with pytest.raises(MalformedMessageError):
        server.receive(0, other)
    # a forged label over a foreign key decrypts to garbage: the decryptors see coefficients
    # off the grid by far more than the noise of 2 encryptions and release nothing
    msg = wire.decode(foreign, _INPUT)
    forged = wire.encode(_INPUT, 1, {**msg.values, "key_id": ss_a.keys.key_id})
    server.receive(0, forged)
    good = side_a.session(1).step(req[1], Contribution(rng.uniform(-1, 1, d), 0.5))
    server.receive(1, good)
    with pytest.raises(ProtocolViolationError, match="duplicate"):
        server.receive(1, good)
    agg = server.step(())
    assert isinstance(agg, dict)
    for c, a in agg.items():
        with pytest.raises(DecryptionError, match="not an honest sum"):
            side_a.session(c).step(a, None)
    with pytest.raises(ProtocolAbortError, match="decryptors"):
        server.step(())


def test_wrong_chunk_count_and_truncation() -> None:
    d = 5000
    proc, side = _made(CKKSSecureSum(), _spec(d, 1))
    server = proc.new_round(1, [0])
    req = server.step(())
    assert isinstance(req, dict)
    up = side.session(0).step(req[0], Contribution(np.zeros(d)))
    msg = wire.decode(up, _INPUT)
    with pytest.raises(MalformedMessageError, match="chunks"):
        server.receive(0, wire.encode(_INPUT, 1, {**msg.values, "chunks": 1}))
    with pytest.raises(MalformedMessageError):
        server.receive(0, wire.encode(_INPUT, 1, {**msg.values, "c0": msg.raw("c0")[:-5]}))
    with pytest.raises(MalformedMessageError):
        server.receive(0, up[:-1])
    bad = bytearray(msg.raw("c0"))
    bad[0:5] = b"\xff" * 5  # a residue >= q0
    with pytest.raises(MalformedMessageError, match="reduced"):
        server.receive(0, wire.encode(_INPUT, 1, {**msg.values, "c0": bytes(bad)}))
    server.receive(0, up)  # the genuine one still goes in


def test_lying_decryptor_is_detected() -> None:
    d = 2000
    proc, side = _made(CKKSSecureSum(), _spec(d, 3))
    server = proc.new_round(5, [0, 1, 2])
    req = server.step(())
    assert isinstance(req, dict)
    for c in range(3):
        server.receive(c, side.session(c).step(req[c], Contribution(np.full(d, 0.1))))
    agg = server.step(())
    assert isinstance(agg, dict) and len(agg) == 2
    liar, honest = sorted(agg)
    server.receive(honest, side.session(honest).step(agg[honest], None))
    from privfl.he.securesum import _DECRYPTED

    fake = wire.encode(_DECRYPTED, 5, {"fingerprint": proc.params.fingerprint(),
                                       "sum": np.zeros(d + 1)})
    server.receive(liar, fake)
    with pytest.raises(ProtocolAbortError, match="lied"):
        server.step(())


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="bounded"):
        CKKSSecureSum().create(ValueSpec(length=10, max_clients=2))
    with pytest.raises(EncodingOverflowError, match="60"):
        CKKSSecureSum().create(ValueSpec(length=10, max_clients=1000, linf_bound=1e9))
    with pytest.raises(EncodingOverflowError):
        CKKSSecureSum(STANDARD).create(ValueSpec(length=10, max_clients=10, linf_bound=1e6))
    with pytest.raises(ConfigurationError, match="128-bit"):
        CKKSParams(4096, (60, 60), 40)
    with pytest.raises(ConfigurationError):
        CKKSParams(3000, (40, 20), 32)
    proc, side = _made(CKKSSecureSum(), _spec(10, 1))
    server = proc.new_round(0, [0])
    req = server.step(())
    assert isinstance(req, dict)
    with pytest.raises(BoundViolationError, match="weight"):
        side.session(0).step(req[0], Contribution(np.zeros(10), weight=3.0))
    with pytest.raises(BoundViolationError, match="linf"):
        side.session(0).step(req[0], Contribution(np.full(10, 2.0)))
    with pytest.raises(ConfigurationError, match="holds no key"):
        proc.client_session(0)


_FUZZ_PROC = None


def _fuzz_setup():  # type: ignore[no-untyped-def]
    global _FUZZ_PROC
    if _FUZZ_PROC is None:
        proc, side = _made(CKKSSecureSum(), _spec(300, 2))
        srv = proc.new_round(1, [0, 1])
        req = srv.step(())
        up = side.session(0).step(req[0], Contribution(np.full(300, 0.5)))
        srv.receive(0, up)
        agg = srv.step(())
        _FUZZ_PROC = (proc, side, up, agg[0])
    return _FUZZ_PROC


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.sampled_from(["upload", "aggregate"]), **MUTATION)
def test_fuzz_decoders_only_raise_privfl_errors(which: str, pos: int, byte: int, op: str,
                                                blob: bytes) -> None:
    proc, side, upload, aggregate = _fuzz_setup()
    b = mutate(upload if which == "upload" else aggregate, pos, byte, op, blob)
    with contextlib.suppress(PrivflError):
        if which == "upload":
            srv = proc.new_round(1, [0, 1])
            srv.step(())
            srv.receive(0, bytes(b))
        else:
            side.session(1).step(bytes(b), None)


def test_fedavg_with_ckks_equals_plain_within_noise() -> None:
    from privfl.core.bounds import CoordinateClip
    from privfl.core.client import LocalSGD
    from privfl.core.fedavg import FedAvg, FedAvgConfig
    from privfl.core.sampling import FixedSizeSampling
    from privfl.core.securesum import PlainSecureSum
    from privfl.data import federated_digits
    from privfl.models import ModelName, build_model

    data = federated_digits(10, seed=0)
    runs = []
    for secure in (PlainSecureSum(), CKKSSecureSum()):
        fa = FedAvg(model=build_model(ModelName.MLP, data.input_shape, 10), data=data,
                    client_update=LocalSGD(learning_rate=0.2, epochs=1, batch_size=16),
                    config=FedAvgConfig(rounds=6, sampler=FixedSizeSampling(10)),
                    secure_sum=secure, stages=CoordinateClip(1.0))
        runs.append((fa.run(), fa.params))
    (h_plain, p_plain), (h_ckks, p_ckks) = runs
    assert np.abs(p_plain - p_ckks).max() < 1e-4
    assert abs(h_plain.final_accuracy - h_ckks.final_accuracy) <= 0.01


def test_parallel_encryption_gives_the_same_sum() -> None:
    rng = np.random.default_rng(5)
    d = 70 * 4096  # >= 64 ciphertexts: the worker pool is used
    values = {c: rng.uniform(-1, 1, d) for c in range(2)}
    ss = CKKSSecureSum(workers=2)
    out, side, *_ = _round(ss, values, {0: 1.0, 1: 0.5})
    assert side.engine.pool is not None
    ref = values[0] + 0.5 * values[1]
    assert np.abs(out.result.weighted_sum - ref).max() <= 1e-6
    side.engine.pool.close()
