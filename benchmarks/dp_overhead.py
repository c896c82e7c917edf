"""DP-SGD step time against a non-private step, in the same run, for the MLP and the CNN.

Each variant (non-private SGD, Opacus ``hooks``, ``functorch``, ``ew``, ``ghost``, and privfl's
``AUTO`` choice made by :class:`privfl.dp.DPSGDClientUpdate`'s own measurement) trains on the
same fixed physical batch of digits. Variants are interleaved within each round, in a shuffled
order, so drifting machine load hits all of them alike; the reported ratio is the median over
rounds of (variant median / non-private median, same round). torch runs on one thread.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from typing import Any

import numpy as np
import torch
from torch import nn

from privfl.core.params import ParamSpec
from privfl.data.digits import load_digits
from privfl.dp.local import DPSGDClientUpdate, GradSampleMode
from privfl.models import ModelName, build_model

CONFIG = {"models": ["mlp", "cnn"], "batch_size": 256, "rounds": 20, "steps_per_round": 5,
          "noise_multiplier": 1.0, "clip_norm": 1.0, "threads": 1}
MODES = [GradSampleMode.HOOKS, GradSampleMode.FUNCTORCH, GradSampleMode.EW, GradSampleMode.GHOST]
#: privfl's own mode; measured too, but "fastest Opacus mode" is taken over MODES only.
PRIVFL_MODES = [GradSampleMode.PRIVFL]


def _plain_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Any:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def _dp_step(dp: DPSGDClientUpdate, mode: GradSampleMode, model: nn.Module, x: torch.Tensor,
             y: torch.Tensor) -> Any:
    w = dp._wrap(model, mode)
    opt = dp._optimizer(w, float(len(x)), dp.noise_multiplier, None)
    return lambda: dp._step(w, opt, x, y)


def _case(name: str, cfg: dict[str, Any], device: str) -> dict[str, Any]:
    train, _ = load_digits()
    b = int(cfg["batch_size"])
    x = torch.from_numpy(train.x[:b]).to(device)
    y = torch.from_numpy(train.y[:b]).to(device)
    model = build_model(ModelName(name), (64,), 10).to(device)
    kw = {"noise_multiplier": cfg["noise_multiplier"], "clip_norm": cfg["clip_norm"],
          "sample_rate": b / len(train), "steps": 1, "learning_rate": 0.05, "device": device}
    auto = DPSGDClientUpdate(grad_sample_mode=GradSampleMode.AUTO, **kw)
    t = time.perf_counter()
    spec = ParamSpec.from_module(model)
    auto.train(model.cpu(), spec, spec.to_vector(model.state_dict()), train,
               np.random.default_rng(0), 0, 1)
    probe_s = time.perf_counter() - t
    model = model.to(device)
    chosen = auto.mode
    assert chosen is not None
    variants: dict[str, Any] = {"non_private": _plain_step(model, x, y)}
    for mode in MODES + PRIVFL_MODES:
        dp = DPSGDClientUpdate(grad_sample_mode=mode, **kw)
        variants[mode.value] = _dp_step(dp, mode, model, x, y)
    variants["privfl_auto"] = _dp_step(auto, chosen, model, x, y)
    for fn in variants.values():  # warm-up
        fn()
        fn()
    per_round: dict[str, list[float]] = {k: [] for k in variants}
    order = list(variants)
    rng = random.Random(0)
    for _ in range(int(cfg["rounds"])):
        rng.shuffle(order)
        for k in order:
            times = []
            for _ in range(int(cfg["steps_per_round"])):
                if device == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                variants[k]()
                if device == "cuda":
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            per_round[k].append(statistics.median(times))
    ratios = {k: statistics.median(v / p for v, p in zip(per_round[k], per_round["non_private"],
                                                          strict=True))
              for k in variants}
    dp_modes = [m.value for m in MODES]
    fastest = min(dp_modes, key=lambda m: ratios[m])
    return {
        "model": name, "device": device, "params": spec.dim, "batch_size": b,
        "median_step_ms": {k: 1e3 * statistics.median(v) for k, v in per_round.items()},
        "ratio_to_non_private": ratios,
        "auto_choice": chosen.value, "auto_probe_ms": {k: 1e3 * v
                                                       for k, v in auto.probe_seconds.items()},
        "auto_probe_total_s": probe_s,
        "fastest_opacus_mode": fastest,
        "auto_vs_fastest_opacus": ratios["privfl_auto"] / ratios[fastest],
        "hooks_vs_auto_speedup": ratios["hooks"] / ratios["privfl_auto"],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = dict(CONFIG)
    if args.quick:
        cfg.update(rounds=2, steps_per_round=2)
    if args.repeats:
        cfg["rounds"] = args.repeats
    torch.set_num_threads(int(cfg["threads"]))
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    results = []
    for device in devices:
        for name in cfg["models"]:
            r = _case(name, cfg, device)
            ratios = "  ".join(f"{k} x{v:.2f}" for k, v in r["ratio_to_non_private"].items()
                               if k != "non_private")
            print(f"{device} {name}: non-private {r['median_step_ms']['non_private']:.2f} ms; "
                  f"{ratios}; auto={r['auto_choice']} "
                  f"({r['auto_vs_fastest_opacus']:.2f}x fastest Opacus mode, "
                  f"{r['hooks_vs_auto_speedup']:.2f}x faster than hooks)")
            results.append(r)
    return {"config": cfg, "results": results}
