"""The centralized baseline: Opacus DP-SGD on the federation's pooled training data.

Same model, same initial weights, same number of DP-SGD steps T = ``rounds × local_steps`` and
Poisson rate q = ``dp_sample_rate`` as one client of the federated local-DP cells, so σ is the
same for the same ε (the accountant sees the same T Poisson-subsampled Gaussians); what differs
is that every step samples from all N examples instead of one client's nₖ — the expected batch
q·N is larger, the noise per example smaller. The gap to the federated cells is the price of
keeping the data apart. ``dp = "off"`` trains the same steps with plain SGD on the same Poisson
batches.

The same canary records and membership attack as :mod:`privfl.audit.plan` audit the result
(example level, final model).
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np

from privfl.accounting.calibrate import calibrate_noise_multiplier
from privfl.audit.canaries import CanaryExamples
from privfl.audit.membership import loss_threshold_attack
from privfl.audit.one_run import one_run_audit
from privfl.audit.plan import (
    DEFAULT_CANARIES,
    example_membership_losses,
    membership_finding,
    one_run_finding,
    score_example_canaries,
)
from privfl.audit.units import AuditUnit
from privfl.data.dataset import ArrayDataset, FederatedDataset

__all__ = ["run_centralized"]


def _pooled(data: FederatedDataset) -> FederatedDataset:
    x = np.concatenate([c.x for c in data.clients])
    y = np.concatenate([c.y for c in data.clients])
    return FederatedDataset((ArrayDataset(x, y),), data.test, data.num_classes, data.name)


def run_centralized(cfg: Any) -> dict[str, Any]:
    """Train centrally as ``cfg`` (a RunConfig) describes; accuracy, ε and audit findings."""
    import torch

    from privfl.accounting.accountant import dpsgd_epsilon
    from privfl.core.client import LocalSGD, evaluate
    from privfl.core.params import ParamSpec
    from privfl.dp.local import DPSGDClientUpdate, GradSampleMode
    from privfl.experiment import DPMode, build_data, build_model

    t0 = time.perf_counter()
    base = _pooled(build_data(cfg))
    canaries = CanaryExamples(count=cfg.canaries or DEFAULT_CANARIES[AuditUnit.EXAMPLE],
                              seed=cfg.seed) if cfg.audit else None
    data = canaries.add_to(base) if canaries is not None else base
    model = build_model(cfg, base)
    spec = ParamSpec.from_module(model)
    steps = cfg.rounds * (cfg.local_steps or 1)
    q = cfg.dp_sample_rate
    n = len(data.clients[0])
    private = cfg.dp is DPMode.LOCAL
    sigma = eps = math.inf
    if private:
        sigma = cfg.noise_multiplier or calibrate_noise_multiplier(
            target_epsilon=cfg.epsilon, delta=cfg.delta, sample_rate=q, steps=steps,
            accountant=cfg.accountant)
        eps = dpsgd_epsilon(sample_rate=q, noise_multiplier=sigma, steps=steps, delta=cfg.delta,
                            accountant=cfg.accountant)
        update: Any = DPSGDClientUpdate(
            noise_multiplier=sigma, clip_norm=cfg.clip_norm or 1.0, sample_rate=q, steps=steps,
            learning_rate=cfg.lr, secure_mode=cfg.secure_randomness,
            grad_sample_mode=GradSampleMode(cfg.grad_sample_mode))
    else:
        update = LocalSGD(learning_rate=cfg.lr, epochs=None, steps=steps,
                          batch_size=max(1, round(q * n)))
    params = spec.to_vector(model.state_dict())
    rng = np.random.default_rng([cfg.seed, 0, 1])
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = update.train(model, spec, params, data.clients[0], rng, 0, 1)
    finally:
        torch.set_num_threads(before)
    final = params + np.asarray(result.delta, dtype=np.float32)
    spec.load_into(model, final)
    loss, acc = evaluate(model, base.test)
    out: dict[str, Any] = {
        "accuracy": acc, "test_loss": loss, "steps": steps, "sample_rate": q,
        "expected_batch": q * n, "noise_multiplier": sigma, "accountant_epsilon": eps,
        "accountant": cfg.accountant.name, "unit": "example",
        "neighboring_relation": "add or remove one example", "findings": [], "raw": {}}
    if canaries is not None:
        beta = 1.0 - cfg.audit_confidence
        scores, inc = score_example_canaries(model, canaries, base)
        bound = one_run_audit(scores, inc, delta=cfg.delta, beta=beta)
        mem, non = example_membership_losses(model, base, cfg.seed)
        mia = loss_threshold_attack(mem, non, delta=cfg.delta, beta=beta)
        out["findings"] = [one_run_finding(bound, AuditUnit.EXAMPLE, cfg.delta, eps).to_dict(),
                           membership_finding(mia, AuditUnit.EXAMPLE, cfg.delta, eps).to_dict()]
        out["raw"] = {"canary_scores": scores.tolist(), "canary_included": inc.tolist(),
                      "member_losses": mem.tolist(), "non_member_losses": non.tolist()}
    out["seconds"] = time.perf_counter() - t0
    return out
