"""Synthetic(α, β): the heterogeneous federated data set of Li et al. (FedProx, MLSys 2020).

For client k (60 features, 10 classes):

* model heterogeneity α: u_k ~ N(0, α); W_k ∈ ℝ^{10×60}, b_k ∈ ℝ^{10} with entries ~ N(u_k, 1);
* data heterogeneity β: B_k ~ N(0, β); v_k ∈ ℝ^{60} with entries ~ N(B_k, 1);
* x ~ N(v_k, Σ) with Σ diagonal, Σ_jj = j^{-1.2};  y = argmax softmax(W_k x + b_k);
* client sizes follow a power law (lognormal), as in the paper.

Synthetic(0, 0) is the paper's homogeneous-ish setting; Synthetic(1, 1) the hardest. Note that
every client has its own labelling model Wₖ, so no single global model fits all clients well.
``iid=True`` gives the paper's Synthetic-IID: one shared W, b ~ N(0, 1) and v = 0 for all
clients. A fraction of each client's examples is held out and pooled into the test set.
"""

from __future__ import annotations

import numpy as np

from privfl._validation import require_int, require_real
from privfl.data.dataset import ArrayDataset, FederatedDataset

__all__ = ["synthetic_federated"]

_DIM = 60
_CLASSES = 10


def synthetic_federated(num_clients: int, *, alpha: float = 1.0, beta: float = 1.0,
                        mean_examples: int = 100, test_fraction: float = 0.2,
                        seed: int = 0, iid: bool = False) -> FederatedDataset:
    """Generate Synthetic(α, β) for ``num_clients`` clients.

    Raises:
        ConfigurationError: A parameter is out of range.
    """
    require_int("num_clients", num_clients, minimum=1)
    require_real("alpha", alpha, low=0.0)
    require_real("beta", beta, low=0.0)
    require_int("mean_examples", mean_examples, minimum=5)
    require_real("test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    rng = np.random.default_rng(seed)
    sigma = np.arange(1, _DIM + 1, dtype=np.float64) ** -1.2
    sizes = np.maximum(5, rng.lognormal(np.log(mean_examples) - 0.5, 1.0, num_clients)).astype(int)
    train, tests_x, tests_y = [], [], []
    w_shared = rng.normal(0.0, 1.0, (_CLASSES, _DIM))
    b_shared = rng.normal(0.0, 1.0, _CLASSES)
    for k in range(num_clients):
        if iid:
            w, b, v = w_shared, b_shared, np.zeros(_DIM)
        else:
            u = rng.normal(0.0, np.sqrt(alpha)) if alpha > 0 else 0.0
            w = rng.normal(u, 1.0, (_CLASSES, _DIM))
            b = rng.normal(u, 1.0, _CLASSES)
            big_b = rng.normal(0.0, np.sqrt(beta)) if beta > 0 else 0.0
            v = rng.normal(big_b, 1.0, _DIM)
        n = int(sizes[k])
        x = rng.normal(v, np.sqrt(sigma), (n, _DIM))
        y = np.argmax(x @ w.T + b, axis=1)
        n_test = max(1, int(round(n * test_fraction)))
        train.append(ArrayDataset.of(x[n_test:], y[n_test:]))
        tests_x.append(x[:n_test])
        tests_y.append(y[:n_test])
    test = ArrayDataset.of(np.concatenate(tests_x), np.concatenate(tests_y))
    name = "synthetic-iid" if iid else f"synthetic({alpha},{beta})"
    return FederatedDataset(tuple(train), test, _CLASSES, name=name)
