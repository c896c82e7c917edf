from __future__ import annotations

import numpy as np
import pytest

from privfl.core.server_opt import FedAdagrad, FedAdam, FedAvgServer, FedYogi
from privfl.errors import ConfigurationError, ShapeMismatchError


def _reference(kind: str, deltas: list[np.ndarray], lr: float, b1: float, b2: float,
               tau: float) -> np.ndarray:
    """Algorithm 2 of Reddi et al. (2021), written out independently in float64."""
    theta = np.zeros_like(deltas[0], dtype=np.float64)
    m = np.zeros_like(theta)
    v = np.full_like(theta, tau**2)
    for d in deltas:
        d = d.astype(np.float64)
        m = b1 * m + (1 - b1) * d
        if kind == "adagrad":
            v = v + d**2
        elif kind == "adam":
            v = b2 * v + (1 - b2) * d**2
        else:
            v = v - (1 - b2) * d**2 * np.sign(v - d**2)
        theta = theta + lr * m / (np.sqrt(v) + tau)
    return theta


@pytest.mark.parametrize(("cls", "kind"), [(FedAdagrad, "adagrad"), (FedAdam, "adam"),
                                           (FedYogi, "yogi")])
def test_adaptive_optimizers_match_reference(cls: type, kind: str) -> None:
    rng = np.random.default_rng(0)
    deltas = [rng.normal(size=50).astype(np.float32) for _ in range(5)]
    opt = cls(learning_rate=0.05, beta1=0.9, beta2=0.99, tau=1e-3)
    theta = np.zeros(50, np.float32)
    for d in deltas:
        theta = opt.step(theta, d)
    np.testing.assert_allclose(theta, _reference(kind, deltas, 0.05, 0.9, 0.99, 1e-3),
                               rtol=1e-4, atol=1e-6)


def test_fedavg_server_and_momentum() -> None:
    theta = np.ones(3, np.float32)
    d = np.array([1.0, -2.0, 0.5])
    np.testing.assert_allclose(FedAvgServer(1.0).step(theta, d), theta + d)
    opt = FedAvgServer(0.5, momentum=0.9)
    t1 = opt.step(theta, d)
    t2 = opt.step(t1, d)
    np.testing.assert_allclose(t2, t1 + 0.5 * (0.9 * d + d), rtol=1e-6)
    assert theta[0] == 1.0  # inputs are not mutated


def test_validation() -> None:
    with pytest.raises(ConfigurationError, match="learning_rate"):
        FedAvgServer(0.0)
    with pytest.raises(ConfigurationError, match="beta1"):
        FedAdam(beta1=1.0)
    with pytest.raises(ShapeMismatchError):
        FedAvgServer().step(np.zeros(3, np.float32), np.zeros(4))
