"""How client deltas are weighted in the federated average."""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt

__all__ = ["Weighting", "client_weights"]


class Weighting(enum.Enum):
    """Client weights wₖ in Δ̄ = Σ wₖΔₖ / Σ wₖ.

    ``EXAMPLES``: wₖ = nₖ / maxⱼ nⱼ (FedAvg's weighting, normalised into (0, 1] so that secure
    sums can bound it). ``UNIFORM``: wₖ = 1 (the weighting DP-FedAvg needs for a fixed
    sensitivity).
    """

    EXAMPLES = "examples"
    UNIFORM = "uniform"


def client_weights(sizes: npt.ArrayLike, weighting: Weighting) -> npt.NDArray[np.float64]:
    """The weight of every client given its number of examples."""
    n = np.asarray(sizes, dtype=np.float64)
    if weighting is Weighting.EXAMPLES:
        out: npt.NDArray[np.float64] = n / n.max()
        return out
    return np.ones_like(n)
