from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privfl.accounting import PrivacyLedger, PrivacyUnit, dpsgd_epsilon
from privfl.core.client import LocalSGD
from privfl.core.fedavg import FedAvg, FedAvgConfig
from privfl.core.params import ParamSpec
from privfl.core.sampling import FixedSizeSampling, PoissonSampling
from privfl.data.dataset import ArrayDataset, FederatedDataset
from privfl.dp import DPSGDClientUpdate, GradSampleMode, check_model
from privfl.errors import ConfigurationError


def _data(n_clients: int = 3, n: int = 40, seed: int = 0) -> FederatedDataset:
    rng = np.random.default_rng(seed)
    clients = tuple(ArrayDataset.of(rng.normal(size=(n, 16)), rng.integers(0, 4, n))
                    for _ in range(n_clients))
    return FederatedDataset(clients, ArrayDataset.of(rng.normal(size=(30, 16)),
                                                     rng.integers(0, 4, 30)), 4)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 4))


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Unflatten(1, (1, 4, 4)), nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(),
                         nn.Flatten(), nn.Linear(48, 4))


@pytest.mark.parametrize("make_model", [_mlp, _cnn], ids=["mlp", "cnn"])
@pytest.mark.parametrize("mode", [GradSampleMode.HOOKS, GradSampleMode.FUNCTORCH,
                                  GradSampleMode.PRIVFL, GradSampleMode.EW, GradSampleMode.GHOST])
def test_no_noise_no_clipping_equals_plain_training(make_model, mode: GradSampleMode) -> None:  # type: ignore[no-untyped-def]
    data = _data(1)
    model = make_model()
    spec = ParamSpec.from_module(model)
    theta = spec.to_vector(model.state_dict())
    rng = np.random.default_rng(0)
    dp = DPSGDClientUpdate(noise_multiplier=0.0, clip_norm=1e6, sample_rate=1.0, steps=3,
                           learning_rate=0.1, grad_sample_mode=mode, device="cpu")
    got = dp.train(model, spec, theta, data.clients[0], rng, 0, 1)
    plain = LocalSGD(learning_rate=0.1, epochs=None, steps=3, batch_size=None)
    ref = plain.train(make_model(), spec, theta, data.clients[0], rng, 0, 1)
    np.testing.assert_allclose(got.delta, ref.delta, atol=1e-5, rtol=1e-4)
    assert dp.mode is mode


def test_accountant_kept_across_rounds_and_not_doubled_by_reloads() -> None:
    data = _data(3)
    ledger = PrivacyLedger(delta=1e-5)
    dp = DPSGDClientUpdate(noise_multiplier=1.0, clip_norm=1.0, sample_rate=0.2, steps=4,
                           learning_rate=0.1, ledger=ledger, device="cpu",
                           grad_sample_mode=GradSampleMode.HOOKS)
    fa = FedAvg(model=_mlp(), data=data, client_update=dp,
                config=FedAvgConfig(rounds=5, sampler=PoissonSampling(0.5), seed=3))
    h = fa.run()
    for c in range(3):
        rounds = sum(c in r.selected for r in h.rounds)
        assert ledger.rounds(PrivacyUnit.example(c)) == [r.round_id for r in h.rounds
                                                          if c in r.selected]
        want = dpsgd_epsilon(sample_rate=0.2, noise_multiplier=1.0, steps=4 * rounds, delta=1e-5)
        assert ledger.epsilon(PrivacyUnit.example(c)) == pytest.approx(want, rel=1e-9)
    assert any(len(r.selected) < 3 for r in h.rounds)  # some client did skip a round


def test_auto_mode_picks_a_measured_mode() -> None:
    data = _data(1, n=64)
    dp = DPSGDClientUpdate(noise_multiplier=1.0, clip_norm=1.0, sample_rate=0.5, steps=1,
                           learning_rate=0.1, device="cpu")
    model = _mlp()
    spec = ParamSpec.from_module(model)
    dp.train(model, spec, spec.to_vector(model.state_dict()), data.clients[0],
             np.random.default_rng(0), 0, 1)
    assert dp.mode in set(GradSampleMode) - {GradSampleMode.AUTO}
    assert dp.probe_seconds[dp.mode.value] == min(dp.probe_seconds.values())
    assert {"hooks", "privfl", "ew", "ghost"} <= set(dp.probe_seconds)


def test_noise_has_the_configured_scale() -> None:
    # One step, all-zero gradients (zero inputs, zero bias grads impossible) -> use a model whose
    # loss does not depend on the parameters' values: compare two seeds' deltas instead.
    data = _data(1, n=50)
    model = _mlp()
    spec = ParamSpec.from_module(model)
    theta = spec.to_vector(model.state_dict())
    deltas = []
    for seed in range(2):
        dp = DPSGDClientUpdate(noise_multiplier=2.0, clip_norm=0.5, sample_rate=1.0, steps=1,
                               learning_rate=1.0, device="cpu",
                               grad_sample_mode=GradSampleMode.HOOKS)
        deltas.append(dp.train(_mlp(), spec, theta, data.clients[0],
                               np.random.default_rng(seed), 0, 1).delta)
    # difference of two independent noises: std √2·σC/B per coordinate (B = expected batch 50)
    diff = deltas[0] - deltas[1]
    assert np.std(diff) == pytest.approx(np.sqrt(2) * 2.0 * 0.5 / 50, rel=0.15)


def test_secure_mode_noise_scale() -> None:
    data = _data(1, n=50)
    model = _mlp()
    spec = ParamSpec.from_module(model)
    theta = spec.to_vector(model.state_dict())
    deltas = [DPSGDClientUpdate(noise_multiplier=2.0, clip_norm=0.5, sample_rate=1.0, steps=1,
                                learning_rate=1.0, device="cpu", secure_mode=True,
                                grad_sample_mode=GradSampleMode.HOOKS).train(
        _mlp(), spec, theta, data.clients[0], np.random.default_rng(0), 0, 1).delta
        for _ in range(2)]
    assert np.std(deltas[0] - deltas[1]) == pytest.approx(np.sqrt(2) * 2.0 * 0.5 / 50, rel=0.15)


def test_empty_poisson_batches_still_take_a_noisy_step() -> None:
    data = _data(1, n=5)
    model = _mlp()
    spec = ParamSpec.from_module(model)
    dp = DPSGDClientUpdate(noise_multiplier=1.0, clip_norm=1.0, sample_rate=0.01, steps=5,
                           learning_rate=0.1, device="cpu", grad_sample_mode=GradSampleMode.EW)
    res = dp.train(model, spec, spec.to_vector(model.state_dict()), data.clients[0],
                   np.random.default_rng(0), 0, 1)
    assert np.isfinite(res.delta).all() and np.abs(res.delta).max() > 0
    assert res.steps == 5


def test_batchnorm_model_gets_a_clear_error_with_the_fix() -> None:
    model = nn.Sequential(nn.Linear(16, 8), nn.BatchNorm1d(8), nn.Linear(8, 4))
    with pytest.raises(ConfigurationError, match="ModuleValidator.fix"):
        check_model(model)
    fa = FedAvg(model=model, data=_data(2),
                client_update=DPSGDClientUpdate(noise_multiplier=1.0, clip_norm=1.0,
                                                sample_rate=0.1, steps=1, learning_rate=0.1),
                config=FedAvgConfig(rounds=1, sampler=FixedSizeSampling(2)))
    with pytest.raises(ConfigurationError, match="BatchNorm"):
        fa.run()


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"noise_multiplier": -1.0}, "noise_multiplier"), ({"clip_norm": 0.0}, "clip_norm"),
    ({"clip_norm": -1.0}, "clip_norm"), ({"sample_rate": 0.0}, "sample_rate"),
    ({"sample_rate": 1.01}, "sample_rate"), ({"steps": 0}, "steps"),
])
def test_validation(kwargs: dict[str, float], name: str) -> None:
    base = {"noise_multiplier": 1.0, "clip_norm": 1.0, "sample_rate": 0.1, "steps": 1,
            "learning_rate": 0.1}
    with pytest.raises(ConfigurationError, match=f"`{name}`"):
        DPSGDClientUpdate(**{**base, **kwargs})  # type: ignore[arg-type]


def test_fast_grad_sampler_matches_opacus_with_reused_layer_and_odd_shapes() -> None:
    """privfl's samplers against Opacus's on stride/dilation/no-bias convs and a reused layer."""
    from opacus.grad_sample import GradSampleModule

    from privfl.dp._fast_grad_sample import FastGradSampleModule

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1 = nn.Conv2d(2, 4, 3, stride=2, padding=2, dilation=2, bias=False)
            self.c2 = nn.Conv2d(4, 3, (2, 3), padding=(1, 0))
            self.fc = nn.Linear(3 * 6 * 3, 6)
            self.shared = nn.Linear(6, 6)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = self.c2(torch.relu(self.c1(x))).flatten(1)
            return self.shared(torch.tanh(self.shared(self.fc(h))))  # layer used twice

    torch.manual_seed(0)
    net = Net()
    x = torch.randn(7, 2, 9, 9)
    samples = []
    for cls in (GradSampleModule, FastGradSampleModule):
        model = cls(_copy(net))
        model(x).square().sum().backward()
        samples.append([p.grad_sample for p in model.parameters()])
    for a, b in zip(*samples, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def _copy(net: nn.Module) -> nn.Module:
    import copy

    return copy.deepcopy(net)
