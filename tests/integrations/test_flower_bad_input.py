"""Bad input at the Flower boundary: each case excludes the node (with the reason) or is refused
before the first round; none produces a wrong aggregate or a crash inside Flower."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import ConfigRecord  # noqa: E402

import privfl.integrations.flower as pf  # noqa: E402
from privfl.core.bounds import CoordinateClip  # noqa: E402
from privfl.core.client import LocalSGD  # noqa: E402
from privfl.core.fedavg import FedAvg, FedAvgConfig  # noqa: E402
from privfl.core.sampling import FixedSizeSampling  # noqa: E402
from privfl.core.transport import InMemoryTransport  # noqa: E402
from privfl.errors import EncodingOverflowError  # noqa: E402
from privfl.secagg import PairwiseSecureSum  # noqa: E402

from ..core.test_fedavg import _data, _model  # noqa: E402


@dataclass
class _Meta:
    src_node_id: int
    message_type: str = pf.MESSAGE_TYPE


@dataclass
class _Err:
    code: int
    reason: str


@dataclass
class _Reply:
    """What the strategy reads of a Flower reply."""

    node: int
    content: dict[str, Any] = field(default_factory=dict)
    error: _Err | None = None

    @property
    def metadata(self) -> _Meta:
        return _Meta(self.node)

    def has_error(self) -> bool:
        return self.error is not None

    def has_content(self) -> bool:
        return bool(self.content)


class _Out:
    """Stands in for flwr's Message on the way out (it needs Flower's runtime)."""

    def __init__(self, content: Any, **kw: Any) -> None:
        self.content, self.kw = content, kw


class _Grid:
    """A grid whose nodes answer through ``answer(node, request bytes) -> list[_Reply]``."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer

    def send_and_receive(self, msgs: list[_Out], *, timeout: float) -> list[_Reply]:
        out: list[_Reply] = []
        for m in msgs:
            out.extend(self.answer(m.kw["dst_node_id"], bytes(m.content["privfl"]["message"])))
        return out


@pytest.fixture
def federation(monkeypatch: pytest.MonkeyPatch) -> tuple[FedAvg, dict[int, int]]:
    monkeypatch.setattr(pf, "Message", _Out)
    fa = FedAvg(model=_model(), data=_data(6), client_update=LocalSGD(learning_rate=0.3),
                config=FedAvgConfig(rounds=1, sampler=FixedSizeSampling(6)),
                secure_sum=PairwiseSecureSum(), stages=CoordinateClip(1.0))
    return fa, {c: 100 + c for c in range(6)}  # privfl client -> Flower node


def _honest(fa: FedAvg):  # type: ignore[no-untyped-def]
    roles = fa.client_pool().roles

    def answer(node: int, request: bytes) -> list[_Reply]:
        reply = roles[node - 100].handle(request)
        return [_Reply(node, {"privfl": ConfigRecord({"message": reply})})]
    return answer


def _run(fa: FedAvg, node_of: dict[int, int], answer: Any) -> Any:
    clients = pf.FlowerClients(_Grid(answer), node_of, 1, timeout=1.0)
    return InMemoryTransport().run(fa.server.open_round(1, list(range(6))), clients)


@pytest.mark.parametrize(("case", "why"), [
    ("no record", "without a `privfl` record"),
    ("bytes as text", "is not bytes"),
    ("error reply", "node error 2"),
    ("silent", "no reply within"),
    ("twice", "answered twice"),
    ("garbage", "rejected"),
])
def test_a_misbehaving_node_is_excluded_with_the_reason(federation: Any, case: str,
                                                        why: str) -> None:
    fa, node_of = federation
    honest = _honest(fa)
    bad = 102

    def answer(node: int, request: bytes) -> list[_Reply]:
        if node != bad:
            return honest(node, request)
        if case == "no record":
            return [_Reply(node, {"other": ConfigRecord({"x": 1})})]
        if case == "bytes as text":
            return [_Reply(node, {"privfl": ConfigRecord({"message": "text"})})]
        if case == "error reply":
            return [_Reply(node, error=_Err(2, "<class 'RuntimeError'>:<'boom'>"))]
        if case == "silent":
            return []
        if case == "twice":
            return honest(node, request) * 2
        return [_Reply(node, {"privfl": ConfigRecord({"message": b"PVFL garbage"})})]

    out = _run(fa, node_of, answer)
    assert why in out.dropped[2]
    assert out.result.contributors == (0, 1, 3, 4, 5)


def test_a_node_answering_for_another_node_is_ignored(federation: Any) -> None:
    """Node 102 also sends a reply claiming to come from node 101's exchange slot: the sender is
    Flower's metadata, so the forged reply is attributed to 102 (twice) and 102 is excluded."""
    fa, node_of = federation
    honest = _honest(fa)

    def answer(node: int, request: bytes) -> list[_Reply]:
        replies = honest(node, request)
        if node == 102:
            replies.append(_Reply(102, replies[0].content))  # 102 speaking for 101
        if node == 101:
            return []  # 101's own reply never arrives
        return replies

    out = _run(fa, node_of, answer)
    assert "answered twice" in out.dropped[2] and "no reply" in out.dropped[1]
    assert out.result.contributors == (0, 3, 4, 5)


def test_a_sum_that_cannot_fit_the_model_is_refused_before_any_round() -> None:
    strategy = pf.PrivflStrategy(model=_model(), secure_sum=PairwiseSecureSum(precision=1e-18),
                                 stages=CoordinateClip(1e9))
    with pytest.raises(EncodingOverflowError):
        strategy._server(10, 1, np.zeros(strategy.param_spec.dim, np.float32))
