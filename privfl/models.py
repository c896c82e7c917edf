"""Small reference models: an MLP and a CNN for the 8×8 digits, logistic regression.

Any ``torch.nn.Module`` that maps a batch of inputs to class logits works with privfl; these are
the defaults used by the CLI, the tests and the benchmarks. None uses BatchNorm, so all are
compatible with Opacus DP-SGD.
"""

from __future__ import annotations

import enum
import math

import torch
from torch import nn

from privfl._validation import require_int

__all__ = ["CNN", "MLP", "LogisticRegression", "ModelName", "build_model"]


class MLP(nn.Module):
    """Flatten → Linear(d, hidden) → ReLU → Linear(hidden, classes)."""

    def __init__(self, in_features: int = 64, hidden: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        require_int("hidden", hidden, minimum=1)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU(),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (batch, classes)."""
        out: torch.Tensor = self.net(x)
        return out


class CNN(nn.Module):
    """Two 3×3 conv + ReLU + 2×2 max-pool blocks and a linear head, for 1×8×8 images."""

    def __init__(self, side: int = 8, num_classes: int = 10, channels: int = 16) -> None:
        super().__init__()
        self.side = side
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(channels, 2 * channels, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.head = nn.Linear(2 * channels * (side // 4) ** 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Accepts (batch, side²) or (batch, 1, side, side); returns logits."""
        x = x.reshape(-1, 1, self.side, self.side)
        out: torch.Tensor = self.head(self.features(x).flatten(1))
        return out


class LogisticRegression(nn.Module):
    """Multinomial logistic regression: one linear layer on the flattened input."""

    def __init__(self, in_features: int = 60, num_classes: int = 10) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits."""
        out: torch.Tensor = self.linear(x.flatten(1))
        return out


class ModelName(enum.Enum):
    """The built-in models."""

    MLP = "mlp"
    CNN = "cnn"
    LOGREG = "logreg"


def build_model(name: ModelName, input_shape: tuple[int, ...], num_classes: int,
                *, seed: int = 0, hidden: int = 64) -> nn.Module:
    """Build a built-in model with deterministic initial weights (``hidden``: MLP width)."""
    torch.manual_seed(seed)
    d = math.prod(input_shape)
    if name is ModelName.MLP:
        return MLP(d, hidden, num_classes)
    if name is ModelName.CNN:
        side = math.isqrt(d)
        if side * side != d:
            from privfl.errors import ConfigurationError

            raise ConfigurationError(f"the CNN needs square images. Found {d} features.")
        return CNN(side, num_classes)
    return LogisticRegression(d, num_classes)
