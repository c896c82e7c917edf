"""What the server and the clients of this app agree on: data, model, DP-SGD plan."""

from __future__ import annotations

from typing import Any

import torch

import privfl
from privfl.dp import GradSampleMode
from privfl.recipes import DPPlan, local_dp_sgd


def settings(run_config: Any) -> dict[str, Any]:
    """The run configuration with its defaults (``flwr run --run-config`` overrides them)."""
    def get(key: str, default: Any) -> Any:
        return type(default)(run_config.get(key, default))

    return {"rounds": get("num-server-rounds", 3), "partitions": get("num-partitions", 10),
            "epsilon": get("target-epsilon", 8.0), "steps": get("local-steps", 5),
            "q": get("dp-sample-rate", 0.1), "lr": get("learning-rate", 0.5),
            "bound": get("update-bound", 1.0), "seed": get("seed", 0),
            "secure": str(run_config.get("secure-randomness", True)).lower() != "false",
            "timeout": get("exchange-timeout", 120.0), "result": get("result-path", "")}


def data(s: dict[str, Any]) -> Any:
    """The digits split among ``num-partitions`` clients (node i holds partition i)."""
    return privfl.federated_digits(s["partitions"], seed=s["seed"])


def model(s: dict[str, Any]) -> torch.nn.Module:
    """The global model: an MLP on the 8×8 digits (its initial weights come from the seed)."""
    return privfl.build_model(privfl.ModelName.MLP, (64,), 10, seed=s["seed"])


def plan(s: dict[str, Any]) -> DPPlan:
    """Local DP-SGD with σ calibrated so that a client in every round ends at ε (PLD)."""
    return local_dp_sgd(rounds=s["rounds"], steps=s["steps"], sample_rate=s["q"],
                        learning_rate=s["lr"], delta=1e-5, target_epsilon=s["epsilon"],
                        grad_sample_mode=GradSampleMode.HOOKS, secure_mode=s["secure"])
