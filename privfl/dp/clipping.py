"""Clipping of client updates: fixed L2 clipping and adaptive quantile clipping.

Fixed: Δ ↦ Δ·min(1, C/‖Δ‖₂), so every client's contribution has L2 norm ≤ C — the sensitivity
that the Gaussian noise is calibrated to.

Adaptive (Andrew, Thakkar, McMahan & Ramaswamy, NeurIPS 2021, arXiv 1905.03871): C tracks the
γ-quantile of the update norms. Each client also reports bₖ = 1[‖Δₖ‖ ≤ C]; the server forms a
noisy fraction b̄ = (Σ wₖ(bₖ − ½) + N(0, σ_b²)) / D + ½ and updates geometrically,
C ← C·exp(−η_C (b̄ − γ)). The count release costs privacy too: a Gaussian with noise multiplier
2σ_b on a sensitivity-½ query composes with the update release (multiplier z_Δ) into one
Gaussian with z⁻² = z_Δ⁻² + (2σ_b)⁻² (Theorem 1 of the paper). privfl therefore takes the *total*
z from the user and derives z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2); the accountant is charged z.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from privfl._validation import require_positive, require_real
from privfl.errors import ConfigurationError

__all__ = ["AdaptiveClipping", "FixedClipping", "clip_l2", "update_noise_multiplier"]


def clip_l2(x: npt.NDArray[np.floating], clip_norm: float) -> tuple[npt.NDArray[np.float32], float]:
    """Return (x·min(1, C/‖x‖₂), ‖x‖₂) with the product in float32; ``x`` is not modified."""
    require_positive("clip_norm", clip_norm)
    norm = float(np.linalg.norm(x.astype(np.float64)))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    # float32 rounding can push the norm a hair above C; shrink by one part in 10⁶.
    out = (x * (scale * (1 - 1e-6) if scale < 1 else 1.0)).astype(np.float32)
    return out, norm


@dataclass(frozen=True, slots=True)
class FixedClipping:
    """Clip every client delta to L2 norm ``clip_norm`` (C > 0)."""

    clip_norm: float

    def __post_init__(self) -> None:
        require_positive("clip_norm", self.clip_norm)


@dataclass(slots=True)
class AdaptiveClipping:
    """Quantile-tracking clip norm (Andrew et al. 2021); defaults are TFF's.

    Attributes:
        initial_clip_norm: C₀ > 0.
        target_unclipped_quantile: γ ∈ (0, 1), the fraction of updates to leave unclipped.
        learning_rate: η_C > 0 of the geometric update.
        clipped_count_stddev: σ_b > 0, std of the noise on the count; ``None`` means
            0.05 × expected clients per round (TFF's default).
    """

    initial_clip_norm: float = 0.1
    target_unclipped_quantile: float = 0.5
    learning_rate: float = 0.2
    clipped_count_stddev: float | None = None
    clip_norm: float = field(init=False)

    def __post_init__(self) -> None:
        require_positive("initial_clip_norm", self.initial_clip_norm)
        require_real("target_unclipped_quantile", self.target_unclipped_quantile, low=0.0,
                     high=1.0, low_open=True, high_open=True)
        require_positive("learning_rate", self.learning_rate)
        if self.clipped_count_stddev is not None:
            require_positive("clipped_count_stddev", self.clipped_count_stddev)
        self.clip_norm = self.initial_clip_norm

    def count_stddev(self, expected_clients: float) -> float:
        """σ_b for the given expected number of clients per round."""
        if self.clipped_count_stddev is not None:
            return self.clipped_count_stddev
        return 0.05 * expected_clients

    def update(self, unclipped_fraction: float) -> float:
        """C ← C·exp(−η_C (b̄ − γ)); returns the new C."""
        self.clip_norm *= math.exp(-self.learning_rate *
                                   (unclipped_fraction - self.target_unclipped_quantile))
        return self.clip_norm


def update_noise_multiplier(total: float, count_stddev: float) -> float:
    """z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2): the update's share of a total noise multiplier z.

    Raises:
        ConfigurationError: z ≥ 2σ_b (the count would need all the privacy budget).
    """
    require_positive("noise_multiplier", total)
    if total >= 2 * count_stddev:
        raise ConfigurationError(
            f"adaptive clipping needs noise_multiplier < 2 × clipped_count_stddev = "
            f"{2 * count_stddev:g}. Found {total:g}. Tip: raise `clipped_count_stddev` or sample "
            "more clients per round.")
    return float((total**-2 - (2 * count_stddev) ** -2) ** -0.5)
