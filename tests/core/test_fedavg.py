from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privfl.core.client import ClientResult, FedProx, LocalSGD
from privfl.core.fedavg import FedAvg, FedAvgConfig
from privfl.core.params import ParamSpec
from privfl.core.sampling import FixedSizeSampling, PoissonSampling
from privfl.core.transport import InMemoryTransport, ScheduledDropout
from privfl.core.weighting import Weighting
from privfl.data.dataset import ArrayDataset, FederatedDataset
from privfl.errors import ConfigurationError


def _data(n_clients: int, sizes: list[int] | None = None, seed: int = 0) -> FederatedDataset:
    rng = np.random.default_rng(seed)
    sizes = sizes or [30] * n_clients
    clients = tuple(ArrayDataset.of(rng.normal(size=(n, 5)), rng.integers(0, 3, n))
                    for n in sizes)
    test = ArrayDataset.of(rng.normal(size=(20, 5)), rng.integers(0, 3, 20))
    return FederatedDataset(clients, test, 3)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def test_one_client_fedsgd_equals_centralized_gradient_descent() -> None:
    data = _data(1, [40])
    model = _model()
    ref = _model()
    lr = 0.3
    fa = FedAvg(model=model, data=data, client_update=LocalSGD.fedsgd(lr),
                config=FedAvgConfig(rounds=3, sampler=FixedSizeSampling(1)))
    fa.run()
    x, y = torch.from_numpy(data.clients[0].x), torch.from_numpy(data.clients[0].y)
    for _ in range(3):  # centralized full-batch gradient descent, written out by hand
        ref.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        with torch.no_grad():
            for p in ref.parameters():
                p -= lr * p.grad
    spec = ParamSpec.from_module(ref)
    np.testing.assert_allclose(fa.params, spec.to_vector(ref.state_dict()), atol=1e-6, rtol=0)


class _FixedDeltas:
    """A client update that returns predetermined deltas (to test the aggregation alone)."""

    def __init__(self, deltas: dict[int, np.ndarray]) -> None:
        self.deltas = deltas

    def train(self, model, spec, global_params, data, rng, client_id, round_id):  # type: ignore[no-untyped-def]
        return ClientResult(delta=self.deltas[client_id], num_examples=len(data), train_loss=0.0,
                            steps=1)


@pytest.mark.parametrize("weighting", [Weighting.EXAMPLES, Weighting.UNIFORM])
def test_weighted_average_matches_numpy_reference(weighting: Weighting) -> None:
    sizes = [10, 25, 40, 7]
    data = _data(4, sizes)
    d = ParamSpec.from_module(_model()).dim
    rng = np.random.default_rng(1)
    deltas = {c: rng.normal(size=d).astype(np.float32) for c in range(4)}
    fa = FedAvg(model=_model(), data=data, client_update=_FixedDeltas(deltas),
                config=FedAvgConfig(rounds=1, sampler=FixedSizeSampling(4), weighting=weighting))
    theta0 = fa.params.copy()
    fa.run()
    w = np.array(sizes, float) if weighting is Weighting.EXAMPLES else np.ones(4)
    ref = theta0 + sum(w[c] * deltas[c].astype(np.float64) for c in range(4)) / w.sum()
    np.testing.assert_allclose(fa.params, ref, atol=1e-6, rtol=0)


def test_non_finite_client_is_dropped_and_recorded() -> None:
    data = _data(3)
    d = ParamSpec.from_module(_model()).dim
    deltas = {0: np.ones(d, np.float32), 1: np.full(d, np.nan, np.float32),
              2: 3 * np.ones(d, np.float32)}
    fa = FedAvg(model=_model(), data=data, client_update=_FixedDeltas(deltas),
                config=FedAvgConfig(rounds=1, sampler=FixedSizeSampling(3)))
    theta0 = fa.params.copy()
    h = fa.run()
    rec = h.rounds[0]
    assert rec.contributors == [0, 2]
    assert "NaN" in rec.dropped[1]
    np.testing.assert_allclose(fa.params, theta0 + 2.0, atol=1e-6)


def test_all_clients_dropped_round_is_recorded_and_model_unchanged() -> None:
    data = _data(3)
    fa = FedAvg(model=_model(), data=data, client_update=LocalSGD(learning_rate=0.1),
                config=FedAvgConfig(rounds=2, sampler=FixedSizeSampling(3)),
                transport=InMemoryTransport(ScheduledDropout({0: {0, 1, 2}},
                                                             rounds=frozenset({1}))))
    theta0 = fa.params.copy()
    h = fa.run()
    assert h.rounds[0].aborted is not None and "survived" in h.rounds[0].aborted
    assert h.rounds[1].aborted is None and len(h.rounds[1].contributors) == 3
    assert not np.array_equal(fa.params, theta0)


def test_poisson_empty_round_is_skipped() -> None:
    data = _data(2)
    fa = FedAvg(model=_model(), data=data, client_update=LocalSGD(learning_rate=0.1),
                config=FedAvgConfig(rounds=20, sampler=PoissonSampling(0.1), seed=3))
    h = fa.run()
    empty = [r for r in h.rounds if not r.selected]
    assert empty and all(r.aborted == "no client was sampled" for r in empty)
    assert len(h.rounds) == 20


def test_fedprox_pulls_towards_the_global_model() -> None:
    data = _data(1, [60])
    far = []
    for mu in (0.0, 10.0):
        fa = FedAvg(model=_model(), data=data,
                    client_update=FedProx(learning_rate=0.05, epochs=5, batch_size=10, mu=mu),
                    config=FedAvgConfig(rounds=1, sampler=FixedSizeSampling(1)))
        theta0 = fa.params.copy()
        fa.run()
        far.append(float(np.linalg.norm(fa.params - theta0)))
    assert far[1] < 0.7 * far[0]


def test_history_roundtrip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from privfl.core.history import History

    data = _data(2)
    fa = FedAvg(model=_model(), data=data, client_update=LocalSGD(learning_rate=0.1),
                config=FedAvgConfig(rounds=2, sampler=FixedSizeSampling(2)))
    h = fa.run()
    h.save(tmp_path / "h.json")
    h2 = History.load(tmp_path / "h.json")
    assert [r.test_accuracy for r in h2.rounds] == [r.test_accuracy for r in h.rounds]
    assert h2.rounds[0].bytes_up > 0 and h2.rounds[0].seconds["total"] > 0


@pytest.mark.parametrize("kwargs", [{"rounds": 0}, {"rounds": -3}, {"rounds": 1, "seed": -1},
                                    {"rounds": 1, "eval_every": 0}])
def test_config_validation(kwargs: dict[str, int]) -> None:
    with pytest.raises(ConfigurationError):
        FedAvgConfig(sampler=FixedSizeSampling(1), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"learning_rate": 0.0}, {"learning_rate": 0.1, "epochs": None},
                                    {"learning_rate": 0.1, "epochs": 1, "steps": 2},
                                    {"learning_rate": 0.1, "batch_size": 0}])
def test_local_sgd_validation(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        LocalSGD(**kwargs)  # type: ignore[arg-type]
