"""Clipping stages for client-level DP: fixed L2 clipping and adaptive quantile clipping.

Fixed (:class:`FixedClipping`): Δ ↦ Δ·min(1, C/‖Δ‖₂)/C, so every client's contribution has L2
norm ≤ 1 in the secure sum — the sensitivity the noise stage further in is calibrated to; the
server multiplies the aggregate back by C.

Adaptive (:class:`AdaptiveClipping`, Andrew, Thakkar, McMahan & Ramaswamy, NeurIPS 2021,
arXiv 1905.03871): C tracks the γ-quantile of the update norms. The server sends this round's C in
the round config; each client also sends bₖ − ½ with bₖ = 1[‖Δₖ‖ ≤ C] as an auxiliary coordinate
of its vector, inside the secure sum. A Gaussian noise stage further in adds N(0, σ_b²) to that
coordinate's sum; the server forms b̄ = (Σ wₖ(bₖ − ½) + noise) / D + ½ with the noise stage's
fixed denominator D and updates C ← C·exp(−η_C (b̄ − γ)). The count release costs privacy too: a
Gaussian with noise multiplier 2σ_b on a sensitivity-½ query composes with the update release
(multiplier z_Δ) into one Gaussian with z⁻² = z_Δ⁻² + (2σ_b)⁻² (Theorem 1 of the paper); the
noise stage takes the *total* z from the user, derives z_Δ and charges z.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from privfl._validation import require_positive, require_real
from privfl.core import wire
from privfl.core.history import RoundRecord
from privfl.core.spec import ClientId, ValueSpec
from privfl.core.stages import Aggregate, AuxBlock, ChainContext, read_config, strip_aux
from privfl.errors import ConfigurationError, MalformedMessageError

__all__ = ["AdaptiveClipClient", "AdaptiveClipping", "FixedClipping", "L2ClipClient", "clip_l2",
           "update_noise_multiplier"]

_FIXED = wire.Schema(kind=63, name="stage.l2_clip", fields=(
    wire.Field(1, "clip_norm", wire.FieldType.FLOAT),))
_ADAPTIVE_ROUND = wire.Schema(kind=64, name="stage.adaptive_clip.round", fields=(
    wire.Field(1, "clip_norm", wire.FieldType.FLOAT),))
_ADAPTIVE = wire.Schema(kind=65, name="stage.adaptive_clip", fields=())


def clip_l2(x: npt.NDArray[np.floating], clip_norm: float) -> tuple[npt.NDArray[np.float32], float]:
    """Return (x·min(1, C/‖x‖₂), ‖x‖₂) with the product in float32; ``x`` is not modified."""
    require_positive("clip_norm", clip_norm)
    norm = float(np.linalg.norm(x.astype(np.float64)))
    scale = min(1.0, clip_norm / norm) if norm > 0 else 1.0
    # float32 rounding can push the norm a hair above C; shrink by one part in 10⁶.
    out = (x * (scale * (1 - 1e-6) if scale < 1 else 1.0)).astype(np.float32)
    return out, norm


def _scaled(x: npt.NDArray[np.floating], clip_norm: float) -> tuple[npt.NDArray[np.float64], float]:
    clipped, norm = clip_l2(x, clip_norm)
    return clipped.astype(np.float64) / clip_norm, norm


@dataclass
class FixedClipping:
    """Stage: clip every client delta to L2 norm ``clip_norm`` (C > 0) and scale it by 1/C.

    Attributes:
        clip_norm: C. It bounds one client's influence on the sum (the sensitivity the noise
            is calibrated to): a larger C lets more signal through and needs more noise.
    """

    clip_norm: float
    kind: ClassVar[str] = "l2_clip"

    def __post_init__(self) -> None:
        require_positive("clip_norm", self.clip_norm)

    def configure(self, spec: ValueSpec, ctx: ChainContext) -> ValueSpec:
        """Each client's value now has ‖x‖₂ ≤ 1."""
        return replace(spec, l2_bound=1.0, linf_bound=1.0)

    def client_config(self) -> bytes:
        """C."""
        return wire.encode(_FIXED, 0, {"clip_norm": self.clip_norm})

    def round_config(self, round_id: int) -> None:
        """C does not change."""
        return None

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Nothing to check."""

    def finish(self, round_id: int, agg: Aggregate, record: RoundRecord) -> Aggregate:
        """Undo the 1/C scaling."""
        agg.weighted_sum *= self.clip_norm
        record.extra["clip_norm"] = self.clip_norm
        return agg


@dataclass(frozen=True)
class L2ClipClient:
    """Client half of :class:`FixedClipping`."""

    clip_norm: float

    @classmethod
    def from_config(cls, config: bytes) -> L2ClipClient:
        """Rebuild from the server's message."""
        c = float(read_config(config, _FIXED)["clip_norm"])
        if not c > 0:
            raise MalformedMessageError(f"clip norm must be > 0. Found {c}.")
        return cls(c)

    def apply(self, x: npt.NDArray[np.float64], round_config: bytes | None, *,
              client_id: ClientId, round_id: int) -> npt.NDArray[np.float64]:
        """clip(Δ, C)/C."""
        return _scaled(x, self.clip_norm)[0]


@dataclass
class AdaptiveClipping:
    """Stage: quantile-tracking clip norm (Andrew et al. 2021); defaults are TFF's.

    Needs a central noise stage inside it (which adds the count's noise and charges it).

    Attributes:
        initial_clip_norm: C₀ > 0.
        target_unclipped_quantile: γ ∈ (0, 1), the fraction of updates to leave unclipped.
        learning_rate: η_C > 0 of the geometric update.
        clipped_count_stddev: σ_b > 0, std of the noise on the count; ``None`` picks
            max(n̄/20, 1.2·z) for n̄ expected clients per round and total noise multiplier z:
            n̄/20 is Andrew et al.'s (and TFF's) suggestion, and σ_b ≥ 1.2·z keeps the update's
            own noise multiplier z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2) within 1.1·z (the count has L2
            sensitivity ½), so that a small cohort still works — its clip-norm estimate is
            then noisy (std σ_b/n̄ on the unclipped fraction). It defends the count: without
            noise the clip norm would reveal how many clients have large updates.
        noise_multiplier: z, the central noise stage's total noise multiplier (set by
            :class:`~privfl.dp.central.CentralDP`); it only informs the default σ_b.
    """

    initial_clip_norm: float = 0.1
    target_unclipped_quantile: float = 0.5
    learning_rate: float = 0.2
    clipped_count_stddev: float | None = None
    noise_multiplier: float | None = None
    clip_norm: float = field(init=False)
    kind: ClassVar[str] = "adaptive_clip"

    def __post_init__(self) -> None:
        require_positive("initial_clip_norm", self.initial_clip_norm)
        require_real("target_unclipped_quantile", self.target_unclipped_quantile, low=0.0,
                     high=1.0, low_open=True, high_open=True)
        require_positive("learning_rate", self.learning_rate)
        if self.clipped_count_stddev is not None:
            require_positive("clipped_count_stddev", self.clipped_count_stddev)
        self.clip_norm = self.initial_clip_norm
        self._round_clip: dict[int, float] = {}

    def state_dict(self) -> dict[str, Any]:
        """The current clip norm C (the only state between rounds)."""
        return {"clip_norm": self.clip_norm}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore C (must be finite and > 0)."""
        from privfl.core.checkpoint import require
        from privfl.errors import CheckpointError

        c = require(state, "clip_norm", float)
        if not (math.isfinite(c) and c > 0):
            raise CheckpointError(f"checkpointed clip norm must be finite and > 0. Found {c}.")
        self.clip_norm = c
        self._round_clip.clear()

    def count_stddev(self, expected_clients: float) -> float:
        """σ_b for the given expected number of clients per round."""
        if self.clipped_count_stddev is not None:
            return self.clipped_count_stddev
        return max(expected_clients / 20, 1.2 * (self.noise_multiplier or 0.0))

    def update(self, unclipped_fraction: float) -> float:
        """C ← C·exp(−η_C (b̄ − γ)); returns the new C."""
        self.clip_norm *= math.exp(-self.learning_rate *
                                   (unclipped_fraction - self.target_unclipped_quantile))
        return self.clip_norm

    # --- stage ----------------------------------------------------------------------------------
    def configure(self, spec: ValueSpec, ctx: ChainContext) -> ValueSpec:
        """One more coordinate, bₖ − ½, with its own noise (σ_b) from the noise stage."""
        expected = ctx.info.sampler.inclusion_probability(ctx.info.num_clients) * \
            ctx.info.num_clients
        self.count_std = self.count_stddev(expected)
        ctx.aux.append(AuxBlock(owner=self.kind, length=1, l2_bound=0.5,
                                noise_std=self.count_std))
        return replace(spec, length=spec.length + 1, l2_bound=math.sqrt(1.25), linf_bound=1.0)

    def client_config(self) -> bytes:
        """Nothing static: the clip norm changes every round."""
        return wire.encode(_ADAPTIVE, 0, {})

    def round_config(self, round_id: int) -> bytes:
        """This round's C."""
        self._round_clip[round_id] = self.clip_norm
        return wire.encode(_ADAPTIVE_ROUND, round_id, {"clip_norm": self.clip_norm})

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Nothing to check."""

    def finish(self, round_id: int, agg: Aggregate, record: RoundRecord) -> Aggregate:
        """Read the noised count, update C, strip the count, undo the 1/C scaling."""
        c = self._round_clip.pop(round_id, self.clip_norm)
        (count,) = strip_aux(agg, 1)
        if agg.denominator is None:
            raise ConfigurationError("adaptive clipping needs a fixed denominator from a central "
                                     "noise stage inside it.")
        b = float(count) / agg.denominator + 0.5
        record.extra["clip_norm"] = c
        record.extra["unclipped_fraction"] = b
        self.update(b)
        agg.weighted_sum *= c
        return agg


@dataclass(frozen=True)
class AdaptiveClipClient:
    """Client half of :class:`AdaptiveClipping`."""

    @classmethod
    def from_config(cls, config: bytes) -> AdaptiveClipClient:
        """Rebuild from the server's message."""
        read_config(config, _ADAPTIVE)
        return cls()

    def apply(self, x: npt.NDArray[np.float64], round_config: bytes | None, *,
              client_id: ClientId, round_id: int) -> npt.NDArray[np.float64]:
        """clip(Δ, C)/C with C from the round config, then bₖ − ½."""
        if round_config is None:
            raise MalformedMessageError("adaptive clipping needs this round's clip norm")
        msg = wire.decode(round_config, _ADAPTIVE_ROUND)
        c = msg.real("clip_norm")
        if msg.round_id != round_id or not c > 0:
            raise MalformedMessageError(f"bad clip norm {c} for round {msg.round_id}")
        scaled, norm = _scaled(x, c)
        return np.concatenate([scaled, [(1.0 if norm <= c else 0.0) - 0.5]])


def update_noise_multiplier(total: float, count_stddev: float) -> float:
    """z_Δ = (z⁻² − (2σ_b)⁻²)^(−1/2): the update's share of a total noise multiplier z.

    Raises:
        ConfigurationError: z ≥ 2σ_b (the count would need all the privacy budget).
    """
    require_positive("noise_multiplier", total)
    if total >= 2 * count_stddev:
        raise ConfigurationError(
            f"adaptive clipping needs noise_multiplier < 2 × clipped_count_stddev = "
            f"{2 * count_stddev:g}. Found {total:g}. Tip: `clipped_count_stddev` = "
            f"{1.2 * total:.3g} (or more) leaves the update a noise multiplier within 1.1x of "
            "the total; or sample more clients per round.")
    return float((total**-2 - (2 * count_stddev) ** -2) ** -0.5)
