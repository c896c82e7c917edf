"""The two roles share nothing but bytes: object graphs, separate processes, exported state."""

from __future__ import annotations

import enum
import gc
import types
from typing import Any

import numpy as np
import pytest
import torch

from privfl.accounting import Accountant, PrivacyLedger
from privfl.core.bounds import CoordinateClip
from privfl.core.client import LocalSGD
from privfl.core.fedavg import Execution, FedAvg, FedAvgConfig
from privfl.core.roles import ClientRole
from privfl.core.sampling import FixedSizeSampling, PoissonSampling
from privfl.core.securesum import PlainSecureSum
from privfl.core.weighting import Weighting
from privfl.dp import AdaptiveClipping, CentralDP, DPSGDClientUpdate
from privfl.dp.distributed import DistributedDP
from privfl.errors import MalformedMessageError, ProtocolViolationError
from privfl.he import CKKSSecureSum
from privfl.secagg import MultiServerSecureSum, PairwiseSecureSum

from .test_fedavg import _data, _model

_IMMUTABLE = (int, float, complex, str, bytes, bool, type(None), enum.Enum, type,
              types.FunctionType, types.BuiltinFunctionType, types.ModuleType, np.dtype,
              torch.dtype, torch.device, frozenset, range)


def _graph(root: object) -> dict[int, object]:
    """Every mutable object reachable from ``root`` (ids), following references.

    Tuples are followed (they may hold mutable objects) but not counted: an immutable
    container shared by value, such as ``()``, is no channel between the roles.
    """
    seen: dict[int, object] = {}
    visited: set[int] = set()
    todo = [root]
    while todo:
        obj = todo.pop()
        if isinstance(obj, _IMMUTABLE) or id(obj) in visited:
            continue
        visited.add(id(obj))
        if not isinstance(obj, tuple):
            seen[id(obj)] = obj
        todo.extend(gc.get_referents(obj))
    return seen


def _ckks() -> CKKSSecureSum:
    return CKKSSecureSum(workers=1)


CASES: list[tuple[str, Any, Any, Any]] = [
    ("plain", PlainSecureSum, lambda: LocalSGD(learning_rate=0.1), None),
    ("ckks", _ckks, lambda: LocalSGD(learning_rate=0.1), lambda: CoordinateClip(1.0)),
    ("secagg+", lambda: PairwiseSecureSum(sparse=True), lambda: LocalSGD(learning_rate=0.1),
     lambda: CoordinateClip(1.0)),
    ("multiserver+distributed", lambda: MultiServerSecureSum(2),
     lambda: LocalSGD(learning_rate=0.1),
     lambda: DistributedDP(noise_multiplier=1.0, clip_norm=1.0,
                           ledger=PrivacyLedger(delta=1e-5, accountant=Accountant.RDP))),
    ("plain+adaptive", PlainSecureSum, lambda: LocalSGD(learning_rate=0.1),
     lambda: CentralDP(noise_multiplier=0.5, clipping=AdaptiveClipping(),
                       ledger=PrivacyLedger(delta=1e-5))),
    ("ckks+local", _ckks,
     lambda: DPSGDClientUpdate(noise_multiplier=1.0, clip_norm=1.0, sample_rate=0.5, steps=1,
                               learning_rate=0.1, ledger=PrivacyLedger(delta=1e-5),
                               device="cpu"),
     lambda: CoordinateClip(1.0)),
]


@pytest.mark.parametrize(("name", "secure", "update", "stages"), CASES, ids=[c[0] for c in CASES])
def test_server_and_client_roles_share_no_object(name: str, secure: Any, update: Any,
                                                 stages: Any) -> None:
    fa = FedAvg(model=_model(), data=_data(6), client_update=update(),
                config=FedAvgConfig(rounds=2, sampler=PoissonSampling(1.0),
                                    weighting=Weighting.UNIFORM),
                secure_sum=secure(), stages=stages() if stages else None)
    pool = fa.client_pool()
    fa.run_round(1, [0, 1, 2, 3, 4, 5])  # state on both sides after a round
    server = _graph(fa.server)
    for role in pool.roles.values():
        shared = set(server) & set(_graph(role))
        assert not shared, f"{name}: shared {[type(server[i]) for i in shared][:5]}"
    fa.close()


def _run(execution: Execution, secure: Any, stages: Any = None, rounds: int = 2,
         sampler: Any = None) -> np.ndarray:
    torch.manual_seed(0)
    fa = FedAvg(model=_model(), data=_data(6), client_update=LocalSGD(learning_rate=0.3),
                config=FedAvgConfig(rounds=rounds, sampler=sampler or FixedSizeSampling(5),
                                    seed=4),
                secure_sum=secure, stages=stages, execution=execution, workers=2)
    fa.run()
    return fa.params.copy()


@pytest.mark.parametrize("secure", [
    lambda: PlainSecureSum(),
    lambda: PairwiseSecureSum(sparse=True, rounding_seed=9),
    lambda: CKKSSecureSum(rounding_seed=9, workers=1),
], ids=["plain", "secagg+", "ckks"])
def test_roles_in_separate_processes_give_the_in_process_result_bit_for_bit(secure: Any) -> None:
    stages = None if isinstance(secure(), PlainSecureSum) else CoordinateClip(1.0)
    local = _run(Execution.SEQUENTIAL, secure(), stages)
    remote = _run(Execution.PROCESSES, secure(), stages)
    np.testing.assert_array_equal(local, remote)


def test_ray_actors_give_the_in_process_result_bit_for_bit() -> None:
    pytest.importorskip("ray")
    secure = lambda: PairwiseSecureSum(sparse=True, rounding_seed=3)  # noqa: E731
    local = _run(Execution.SEQUENTIAL, secure(), CoordinateClip(1.0))
    remote = _run(Execution.RAY, secure(), CoordinateClip(1.0))
    np.testing.assert_array_equal(local, remote)


def test_client_state_survives_export_between_every_message() -> None:
    """A Flower deployment runs each message in a fresh process: the role's exported state
    must carry a SecAgg+ round through all four exchanges."""
    from privfl.core.simulation import ClientFactory
    from privfl.core.transport import InMemoryTransport, LocalClients

    data = _data(6)
    fa = FedAvg(model=_model(), data=data, client_update=LocalSGD(learning_rate=0.3),
                config=FedAvgConfig(rounds=1, sampler=FixedSizeSampling(6), seed=2),
                secure_sum=PairwiseSecureSum(rounding_seed=1), stages=CoordinateClip(1.0))
    factory = ClientFactory(data=data, model=_model(), client_update=LocalSGD(learning_rate=0.3),
                            seed=2)
    states: dict[int, bytes] = {}

    def fresh(cid: int):  # type: ignore[no-untyped-def]
        def handle(message: bytes) -> bytes:
            role = factory.roles([cid])[cid]  # a new process: nothing but the stored state
            if cid in states:
                role.restore_state(states[cid])
            reply = role.handle(message)
            states[cid] = role.export_state()
            return reply
        return handle

    server_round = fa.server.open_round(1, list(range(6)))
    out = InMemoryTransport().run(server_round, LocalClients({c: fresh(c) for c in range(6)}))
    fa2 = FedAvg(model=_model(), data=data, client_update=LocalSGD(learning_rate=0.3),
                 config=FedAvgConfig(rounds=1, sampler=FixedSizeSampling(6), seed=2),
                 secure_sum=PairwiseSecureSum(rounding_seed=1), stages=CoordinateClip(1.0))
    ref = InMemoryTransport().run(fa2.server.open_round(1, list(range(6))), fa2.client_pool())
    np.testing.assert_array_equal(out.result.weighted_sum, ref.result.weighted_sum)
    assert out.stages == 4 and not out.dropped


def test_client_refuses_replayed_or_stale_rounds_and_stray_messages() -> None:
    data = _data(3)
    fa = FedAvg(model=_model(), data=data, client_update=LocalSGD(learning_rate=0.3),
                config=FedAvgConfig(rounds=3, sampler=FixedSizeSampling(3)))
    role: ClientRole = fa.client_pool().roles[0]
    from privfl.core import wire
    from privfl.core.securesum import _REQUEST

    with pytest.raises(ProtocolViolationError, match="no round is open"):
        role.handle(wire.encode(_REQUEST, 1, {"length": 3}))
    start2 = fa.server.open_round(2, [0, 1, 2]).step(())
    assert isinstance(start2, dict)
    role.handle(start2[0])
    start1 = fa.server.open_round(1, [0, 1, 2]).step(())
    assert isinstance(start1, dict)
    with pytest.raises(ProtocolViolationError, match="replayed or stale"):
        role.handle(start1[0])
    with pytest.raises(ProtocolViolationError, match="replayed or stale"):
        role.handle(start2[0])
    with pytest.raises(MalformedMessageError):
        role.handle(b"junk")


def test_server_round_rejects_envelopes_for_other_rounds_and_bad_bytes() -> None:
    data = _data(3)
    fa = FedAvg(model=_model(), data=data, client_update=LocalSGD(learning_rate=0.3),
                config=FedAvgConfig(rounds=3, sampler=FixedSizeSampling(3)))
    pool = fa.client_pool()
    r1 = fa.server.open_round(1, [0, 1, 2])
    req = r1.step(())
    assert isinstance(req, dict)
    reply = pool.roles[0].handle(req[0])
    r2 = fa.server.open_round(2, [0, 1, 2])
    r2.step(())
    with pytest.raises(ProtocolViolationError, match="round 1"):
        r2.receive(0, reply)
    with pytest.raises(MalformedMessageError):
        r1.receive(0, reply[:-2])
    r1.receive(0, reply)
    with pytest.raises(ProtocolViolationError, match="duplicate"):
        r1.receive(0, reply)
