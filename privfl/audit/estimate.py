"""One-shot empirical privacy estimation (Andrew et al., ICLR 2024, arXiv 2302.03098).

k canary clients with directions cⱼ drawn uniformly from the unit sphere of ℝᵈ join the client
population, are sampled like real clients and send cⱼ scaled past the clip, so clipping sends
exactly C·cⱼ through noise and secure sum. k' more directions are drawn and never inserted. The
statistic of canary j is the cosine gⱼ = cos(cⱼ, θ_T − θ₀) of the final model's displacement
(*final-model* threat model) or maxₜ cos(cⱼ, θₜ − θₜ₋₁) over the released iterates (*all
iterates*, the accountant's adversary).

Null distribution. A direction independent of the model has cos(c, Δ) with density
∝ (1 − t²)^{(d−3)/2} whatever Δ is, i.e. (1 + g)/2 ~ Beta((d−1)/2, (d−1)/2), which is
N(0, 1/d) for large d. For the final model this module maps every cosine through that exact
null to a z-score, z = Φ⁻¹(F_null(g)), so the null is exactly N(0, 1) for any d (the
conversion to ε below is invariant under this monotone map). For all iterates the null of a
maximum over rounds is fitted from the held-out canaries' maxima.

Estimate. Fit N(μ̂, σ̂²) to the inserted canaries' z-scores and report

    ε_est = ε(N(μ₀, σ₀²), N(μ̂, σ̂²); δ)     (:func:`~privfl.audit.divergence.gaussian_pair_epsilon`)

with (μ₀, σ₀) the null — the paper's two-Gaussian form — and the equal-variance μ-GDP form
with μ = |μ̂ − μ₀|/σ₀ beside it. This is a point **estimate**, asymptotically correct for the
Gaussian mechanism as d → ∞ with k = o(d); it is not a bound and may land above the true ε.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special, stats

from privfl._validation import require_int
from privfl.audit.divergence import gaussian_pair_epsilon, gdp_epsilon
from privfl.errors import ConfigurationError

__all__ = ["CanaryEstimate", "ThreatModel", "canary_estimate", "null_z_scores"]


class ThreatModel(enum.Enum):
    """Which released outputs the auditor's statistic reads."""

    FINAL_MODEL = "final model"
    """Only θ_T: a weaker adversary than the accountant's (estimates are lower by design)."""
    ALL_ITERATES = "all iterates"
    """Every round's global model, as the accountant assumes."""


def null_z_scores(cosines: Sequence[float] | npt.NDArray[np.float64],
                  dim: int) -> npt.NDArray[np.float64]:
    """The z-scores Φ⁻¹(F_null(g)) of cosines g of directions uniform on the sphere.

    Raises:
        ConfigurationError: ``dim`` < 2 or a cosine outside [−1, 1].
    """
    require_int("dim", dim, minimum=2)
    g = np.asarray(cosines, dtype=np.float64)
    if not np.isfinite(g).all() or np.any(np.abs(g) > 1 + 1e-9):
        raise ConfigurationError("cosines must lie in [-1, 1].")
    a = (dim - 1) / 2
    u = np.clip((g + 1) / 2, 0.0, 1.0)
    z = np.empty_like(g)
    pos = g >= 0
    with np.errstate(divide="ignore"):
        z[pos] = -special.ndtri_exp(stats.beta.logsf(u[pos], a, a))
        z[~pos] = special.ndtri_exp(stats.beta.logcdf(u[~pos], a, a))
    # Beyond float range the exact tail underflows; there the normal approximation is kept
    # (it only matters for statistics far past any δ of interest).
    bad = ~np.isfinite(z)
    z[bad] = g[bad] * math.sqrt(dim)
    return z


@dataclass(frozen=True, slots=True, kw_only=True)
class CanaryEstimate:
    """Andrew et al.'s ε estimate from one run (an estimate, not a bound).

    Attributes:
        threat_model: Final model or all iterates.
        epsilon_estimate: Two-Gaussian ε at ``delta`` (the paper's form).
        epsilon_gdp: Equal-variance (μ-GDP) form of the same fit.
        delta: The ledger's δ.
        mean_z: μ̂ of the inserted canaries, in units of the null's std.
        std_z: σ̂ of the inserted canaries, in units of the null's std (≈ 1 under the Gaussian
            mechanism).
        null_mean_z: Mean of the held-out canaries (≈ 0 unless canaries leak).
        null_std_z: Std of the held-out canaries (≈ 1 for the final model).
        inserted: k, canaries that took part.
        held_out: k', canaries never inserted.
        dim: d, the length of the parameter vector the directions live in.
    """

    threat_model: ThreatModel
    epsilon_estimate: float
    epsilon_gdp: float
    delta: float
    mean_z: float
    std_z: float
    null_mean_z: float
    null_std_z: float
    inserted: int
    held_out: int
    dim: int


def canary_estimate(inserted: Sequence[float] | npt.NDArray[np.float64],
                    held_out: Sequence[float] | npt.NDArray[np.float64], *, dim: int,
                    delta: float, threat_model: ThreatModel = ThreatModel.FINAL_MODEL
                    ) -> CanaryEstimate:
    """The estimate from inserted and held-out canary statistics.

    Args:
        inserted: gⱼ of the canaries that took part (cosines, or max-cosines for all iterates).
        held_out: The same statistic of canaries never inserted.
        dim: Length d of the parameter vector.
        delta: The ledger's δ.
        threat_model: ``FINAL_MODEL`` (exact analytic null) or ``ALL_ITERATES`` (null fitted to
            the held-out canaries).

    Raises:
        ConfigurationError: Fewer than 2 canaries on either side, or bad values.
    """
    ins = np.asarray(inserted, dtype=np.float64)
    out = np.asarray(held_out, dtype=np.float64)
    if len(ins) < 2 or len(out) < 2:
        raise ConfigurationError(
            f"the canary estimate needs >= 2 inserted and >= 2 held-out canaries. Found "
            f"{len(ins)} and {len(out)}.")
    if threat_model is ThreatModel.FINAL_MODEL:
        z_in, z_out = null_z_scores(ins, dim), null_z_scores(out, dim)
        mu0, s0 = 0.0, 1.0
    else:
        if not (np.isfinite(ins).all() and np.isfinite(out).all()):
            raise ConfigurationError("canary statistics contain NaN or Inf.")
        mu0, s0 = float(out.mean()), float(out.std(ddof=1))
        if not s0 > 0:
            raise ConfigurationError("held-out canaries have zero spread; cannot fit a null.")
        z_in, z_out = (ins - mu0) / s0, (out - mu0) / s0
        mu0, s0 = 0.0, 1.0
    mu, sd = float(z_in.mean()), float(z_in.std(ddof=1))
    sd = max(sd, 1e-9)
    return CanaryEstimate(
        threat_model=threat_model,
        epsilon_estimate=gaussian_pair_epsilon((mu0, s0), (mu, sd), delta),
        epsilon_gdp=gdp_epsilon(abs(mu - mu0) / s0, delta), delta=delta, mean_z=mu, std_z=sd,
        null_mean_z=float(z_out.mean()), null_std_z=float(z_out.std(ddof=1)),
        inserted=len(ins), held_out=len(out), dim=dim)
