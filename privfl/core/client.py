"""Client updates: what a selected client does with the global model in one round.

A :class:`ClientUpdate` starts from the global vector θ, trains on its own data and returns the
delta Δ = θ_local − θ. Provided here:

* :class:`LocalSGD` — mini-batch SGD for a number of epochs or steps (FedAvg, McMahan et al.
  2017). ``LocalSGD.fedsgd(lr)`` is FedSGD: one full-batch gradient step.
* :class:`FedProx` — LocalSGD on F_k(w) + μ/2·‖w − θ‖² (Li et al., MLSys 2020).

Randomness (batch order) comes from the ``numpy.random.Generator`` the driver passes in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from privfl._validation import require_int, require_positive, require_real
from privfl.core.params import ParamSpec
from privfl.data.dataset import ArrayDataset
from privfl.errors import ConfigurationError

__all__ = ["ClientResult", "ClientUpdate", "FedProx", "LocalSGD", "evaluate"]


@dataclass(frozen=True, slots=True, kw_only=True)
class ClientResult:
    """What a client's local training produced.

    Attributes:
        delta: θ_local − θ as float32 (may be non-finite if training diverged; the secure-sum
            client then refuses to send it).
        num_examples: Size of the client's training set.
        train_loss: Mean training loss over the local steps.
        steps: Number of optimizer steps taken.
    """

    delta: npt.NDArray[np.float32]
    num_examples: int
    train_loss: float
    steps: int


class ClientUpdate(Protocol):
    """Local training on one client."""

    def train(self, model: nn.Module, spec: ParamSpec, global_params: npt.NDArray[np.float32],
              data: ArrayDataset, rng: np.random.Generator, client_id: int,
              round_id: int) -> ClientResult:
        """Load ``global_params`` into ``model``, train on ``data``, return the delta."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class LocalSGD:
    """Mini-batch SGD with cross-entropy loss.

    Attributes:
        learning_rate: Client learning rate η_c > 0.
        epochs: Passes over the local data (exclusive with ``steps``).
        steps: Number of mini-batch steps (exclusive with ``epochs``).
        batch_size: Mini-batch size; ``None`` means full batch.
        momentum: SGD momentum in [0, 1).
        weight_decay: L2 penalty ≥ 0.
    """

    learning_rate: float
    epochs: int | None = 1
    steps: int | None = None
    batch_size: int | None = 32
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        require_positive("learning_rate", self.learning_rate)
        if (self.epochs is None) == (self.steps is None):
            raise ConfigurationError(
                "exactly one of `epochs` and `steps` must be set. "
                f"Found epochs={self.epochs!r}, steps={self.steps!r}.")
        if self.epochs is not None:
            require_int("epochs", self.epochs, minimum=1)
        if self.steps is not None:
            require_int("steps", self.steps, minimum=1)
        if self.batch_size is not None:
            require_int("batch_size", self.batch_size, minimum=1)
        require_real("momentum", self.momentum, low=0.0, high=1.0, high_open=True)
        require_real("weight_decay", self.weight_decay, low=0.0)

    @classmethod
    def fedsgd(cls, learning_rate: float) -> LocalSGD:
        """FedSGD: one full-batch gradient step per round."""
        return cls(learning_rate=learning_rate, epochs=None, steps=1, batch_size=None)

    def _batches(self, n: int, rng: np.random.Generator) -> list[npt.NDArray[np.int64]]:
        bs = n if self.batch_size is None else min(self.batch_size, n)
        out: list[npt.NDArray[np.int64]] = []
        target = self.steps if self.steps is not None else None
        epochs = self.epochs if self.epochs is not None else 1 << 30
        for _ in range(epochs):
            perm = rng.permutation(n) if bs < n else np.arange(n)
            for start in range(0, n, bs):
                out.append(perm[start : start + bs].astype(np.int64))
                if target is not None and len(out) == target:
                    return out
        return out

    def _penalty(self, model: nn.Module, anchor: list[torch.Tensor]) -> torch.Tensor | None:
        return None

    def train(self, model: nn.Module, spec: ParamSpec, global_params: npt.NDArray[np.float32],
              data: ArrayDataset, rng: np.random.Generator, client_id: int,
              round_id: int = 0) -> ClientResult:
        """Run local SGD from ``global_params``; see :class:`ClientUpdate`."""
        spec.load_into(model, global_params)
        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        anchor = [p.detach().clone() for p in params]
        opt = torch.optim.SGD(params, lr=self.learning_rate, momentum=self.momentum,
                              weight_decay=self.weight_decay)
        x = torch.from_numpy(data.x)
        y = torch.from_numpy(data.y)
        loss_fn = nn.CrossEntropyLoss()
        losses: list[float] = []
        batches = self._batches(len(data), rng)
        for idx in batches:
            t = torch.from_numpy(idx)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[t]), y[t])
            losses.append(float(loss.detach()))
            pen = self._penalty(model, anchor)
            if pen is not None:
                loss = loss + pen
            loss.backward()
            opt.step()
        local = spec.to_vector(model.state_dict()) if _finite(model) else _nan_vector(spec)
        return ClientResult(delta=local - global_params, num_examples=len(data),
                            train_loss=float(np.mean(losses)), steps=len(batches))


@dataclass(frozen=True, slots=True, kw_only=True)
class FedProx(LocalSGD):
    """LocalSGD on F_k(w) + μ/2·‖w − θ‖², μ ≥ 0 (Li et al. 2020, arXiv 1812.06127)."""

    mu: float = 0.01

    def __post_init__(self) -> None:
        LocalSGD.__post_init__(self)
        require_real("mu", self.mu, low=0.0)

    def _penalty(self, model: nn.Module, anchor: list[torch.Tensor]) -> torch.Tensor | None:
        params = [p for p in model.parameters() if p.requires_grad]
        sq = sum(((p - a) ** 2).sum() for p, a in zip(params, anchor, strict=True))
        return 0.5 * self.mu * sq  # type: ignore[return-value]


def _finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _nan_vector(spec: ParamSpec) -> npt.NDArray[np.float32]:
    return np.full(spec.dim, np.nan, dtype=np.float32)


@torch.no_grad()
def evaluate(model: nn.Module, data: ArrayDataset, *,
             batch_size: int = 2048) -> tuple[float, float]:
    """Mean cross-entropy loss and accuracy of ``model`` on ``data``."""
    model.eval()
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(data.y)
    total_loss = 0.0
    correct = 0
    for start in range(0, len(data), batch_size):
        logits = model(x[start : start + batch_size])
        yy = y[start : start + batch_size]
        total_loss += float(nn.functional.cross_entropy(logits, yy, reduction="sum"))
        correct += int((logits.argmax(1) == yy).sum())
    return total_loss / len(data), correct / len(data)
