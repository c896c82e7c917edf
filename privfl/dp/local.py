"""Local DP-SGD on each client with Opacus: example-level DP inside every client's data set.

DP-SGD (Abadi et al., CCS 2016, arXiv 1607.00133): at each of the k local steps of a round the
client draws a Poisson batch (each of its nₖ examples independently with probability q), clips
every per-example gradient to L2 norm C, sums, adds N(0, σ²C²) per coordinate, divides by the
expected batch size q·nₖ and takes an SGD step. One step is the Poisson-subsampled Gaussian
mechanism; the client's ledger unit (``example/client-k``) is charged
``SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), k)`` for each round it
actually trains — a client that is not selected is not charged, and reloading the global
weights never resets the account. Neighbouring relation: add/remove one example.

This module (with its helper ``_fast_grad_sample``) is the only one that imports opacus.
Per-example gradients come from one of Opacus's grad-sample modes (``hooks``, ``functorch``,
``ew``, ``ghost``) or from ``privfl`` — Opacus's hooks with leaner Conv2d/Linear samplers that
skip a buffer fill and copy per parameter; ``AUTO`` measures the candidate
modes on the model and the client's batch size at the first round (after checking, with σ = 0,
that each mode computes the same clipped gradient as ``hooks``) and keeps the fastest — except
with ``secure_mode=False``, a seeded simulation that promises reproducibility, where it keeps
``privfl`` (else ``hooks``) whatever the timings: the modes agree only up to rounding. The
private copy of the model is wrapped once for the whole federation.

Threat model: the guarantee holds against anyone who sees the client's updates — the server
included — and everything computed from them (the global models), for each client separately;
it says nothing about the client-level unit (a client's whole data set), which needs client-level
DP (:mod:`privfl.dp.central`). It covers only what the ledger charges: the exact training loss
on the private batches is *not* released (``ClientResult.train_loss`` is NaN, and the driver
withholds losses, :meth:`DPSGDClientUpdate.release_policy`) — one example changes it with
certainty. The client's data-set size nₖ is assumed public (it sets the expected batch q·nₖ).

``secure_mode=True`` (the default) draws every privacy-relevant random choice from a ChaCha20
CSPRNG keyed by the OS: the Poisson batch membership that the amplification by sampling relies
on, and the noise, with the floating-point attack mitigation of Holohan & Braghin (arXiv
2107.10138), instead of torch's Mersenne Twister. ``secure_mode=False`` draws both from the
seeded simulation generators: reproducible, and no guarantee against anyone who knows the seed.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import functools
import statistics
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from privfl._csprng import SecureRandom
from privfl._validation import require_int, require_positive, require_probability, require_real
from privfl.accounting.accountant import dpsgd_event
from privfl.accounting.ledger import PrivacyLedger, PrivacyUnit
from privfl.accounting.report import Scope
from privfl.core.client import ClientResult
from privfl.core.params import ParamSpec
from privfl.core.release import ReleasePolicy, Withheld
from privfl.core.spec import ClientId
from privfl.data.dataset import ArrayDataset
from privfl.errors import ConfigurationError

__all__ = ["DPSGDClientUpdate", "GradSampleMode", "check_model"]


class GradSampleMode(enum.Enum):
    """How Opacus obtains per-example gradients (or their norms)."""

    AUTO = "auto"
    HOOKS = "hooks"
    FUNCTORCH = "functorch"
    EW = "ew"
    GHOST = "ghost"
    PRIVFL = "privfl"
    """Opacus hooks with privfl's lean Conv2d/Linear samplers (:mod:`._fast_grad_sample`)."""


# HOOKS first: it is the reference every other mode must reproduce with σ = 0.
_CANDIDATES = (GradSampleMode.HOOKS, GradSampleMode.PRIVFL, GradSampleMode.EW,
               GradSampleMode.GHOST, GradSampleMode.FUNCTORCH)


def check_model(model: nn.Module) -> None:
    """Raise a :class:`ConfigurationError` listing what Opacus cannot train privately.

    BatchNorm mixes examples of a batch (no per-example gradient exists); some layers have no
    per-sample gradient rule. Tip in the message: ``opacus.validators.ModuleValidator.fix``.
    """
    from opacus.validators import ModuleValidator

    errors = ModuleValidator.validate(copy.deepcopy(model).train(), strict=False)
    if errors:
        listed = "; ".join(str(e) for e in errors)
        raise ConfigurationError(
            f"the model cannot be trained with DP-SGD: {listed}. Tip: "
            "`model = opacus.validators.ModuleValidator.fix(model)` replaces BatchNorm with "
            "GroupNorm (and LSTM/GRU/MultiheadAttention with their DP versions); build the "
            "FedAvg driver with the fixed model.")


@functools.cache
def _secure_optimizer(base: type) -> type:
    """A DPOptimizer subclass whose noise comes from the ChaCha20 CSPRNG."""

    class _Secure(base):  # type: ignore[misc]
        _privfl_rng = SecureRandom()

        def add_noise(self) -> None:
            std = self.noise_multiplier * self.max_grad_norm
            for p in self.params:
                ref = p.summed_grad
                noise = self._privfl_rng.normal(ref.numel(), std)
                p.grad = (ref + torch.from_numpy(noise).to(ref).view_as(ref)).view_as(p)

    return _Secure


@dataclass(frozen=True, slots=True)
class _Wrapped:
    mode: GradSampleMode
    base: nn.Module
    module: nn.Module


@dataclass(kw_only=True)
class DPSGDClientUpdate:
    """Client update that trains with Opacus DP-SGD for ``steps`` Poisson batches per round.

    Attributes:
        noise_multiplier: σ ≥ 0 (noise std σ·C on the sum of clipped per-example gradients).
        clip_norm: C > 0, per-example gradient L2 clip.
        sample_rate: q ∈ (0, 1], Poisson inclusion probability of each local example per step.
        steps: Local DP-SGD steps k ≥ 1 per round.
        learning_rate: Client learning rate > 0.
        ledger: The server's copy of the example-level accounts (the report's ledger), and
            the settings (δ, accountant, budget) of the ledger each client keeps for itself.
            A client refuses to train when a round would take it past its budget; the server
            stops the run before a round that would. Client sides get a copy of this update
            without it (:meth:`client_copy`).
        grad_sample_mode: Opacus mode, or ``AUTO`` (measured, see module docstring).
        secure_mode: Draw batches and noise from the OS-seeded CSPRNG (default). ``False`` uses
            the seeded simulation generators: reproducible, but anyone who knows the seed can
            replay the noise and the batches, so the guarantee does not hold against them.
        device: ``"cuda"``/``"cpu"``; ``None`` uses CUDA when available.
    """

    noise_multiplier: float
    clip_norm: float
    sample_rate: float
    steps: int
    learning_rate: float
    ledger: PrivacyLedger | None = None
    grad_sample_mode: GradSampleMode = GradSampleMode.AUTO
    secure_mode: bool = True
    device: str | None = None
    _wrapped: _Wrapped | None = field(default=None, init=False, repr=False)
    _csprng: SecureRandom = field(default_factory=SecureRandom, init=False, repr=False)
    probe_seconds: dict[str, float] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        require_real("noise_multiplier", self.noise_multiplier, low=0.0)
        require_positive("clip_norm", self.clip_norm)
        require_probability("sample_rate", self.sample_rate)
        require_int("steps", self.steps, minimum=1)
        require_positive("learning_rate", self.learning_rate)
        if not isinstance(self.grad_sample_mode, GradSampleMode):
            raise ConfigurationError(
                f"`grad_sample_mode` must be a GradSampleMode. Found {self.grad_sample_mode!r}.")
        if self.device is None:
            self.device = "cuda" if torch.cuda.is_available() else "cpu"

    def __getstate__(self) -> dict[str, Any]:
        """For our own worker processes: no CSPRNG, no wrapped model.

        The CSPRNG's key never leaves a process, and each worker wraps its own model.
        """
        state = dict(self.__dict__)
        state.pop("_csprng", None)
        state["_wrapped"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A fresh OS-keyed CSPRNG in the receiving process."""
        self.__dict__.update(state)
        self._csprng = SecureRandom()

    # --- accounting -----------------------------------------------------------------------
    def client_copy(self) -> DPSGDClientUpdate:
        """The same update for a client side: no reference to the server's ledger."""
        return dataclasses.replace(self, ledger=None)

    def event_params(self) -> dict[str, float]:
        """What a client reports of one round's DP-SGD (public hyper-parameters)."""
        return {"sample_rate": self.sample_rate, "noise_multiplier": self.noise_multiplier,
                "steps": self.steps, "clip_norm": self.clip_norm}

    def release_policy(self) -> ReleasePolicy:
        """The exact training loss is withheld; client sampling does not matter here."""
        return ReleasePolicy(withheld=frozenset({Withheld.TRAIN_LOSS}))

    def scope(self, withheld: list[str]) -> Scope:
        """What the example-level ε covers (``withheld``: what the run did not release)."""
        return Scope(
            unit_kind="example", mechanism="DP-SGD (Opacus)",
            covers=["every message the client sends (its model delta, through any secure sum) "
                    "and everything computed from them: the global models, their test metrics, "
                    "this report"],
            withheld=list(withheld),
            assumed_public=["each client's data-set size n_k (it sets the expected batch q·n_k "
                            "and, with example weighting, the FedAvg weight)",
                            "which clients trained in which round (client sampling is not part "
                            "of an example-level guarantee)",
                            "the hyper-parameters: q, σ, C, local steps, rounds"],
            not_covered=["the client's whole data set (a client-level unit needs client-level "
                         "DP)", "wall-clock timing of local training (it grows with the Poisson "
                         "batch sizes)"],
            randomness="OS-seeded ChaCha20 CSPRNG (batches and noise)" if self.secure_mode else
            "seeded simulation generators: NO GUARANTEE against anyone who knows the seed",
            guarantee_holds=self.secure_mode)

    def round_event(self) -> Any:
        """The DP event one client incurs per round."""
        return dpsgd_event(sample_rate=self.sample_rate, noise_multiplier=self.noise_multiplier,
                           steps=self.steps)

    def before_round(self, round_id: int, selected: list[ClientId]) -> None:
        """Refuse the round if any selected client would exceed its example-level budget."""
        if self.ledger is None:
            return
        event = self.round_event()
        for c in selected:
            self.ledger.check(PrivacyUnit.example(c), event)

    @property
    def mode(self) -> GradSampleMode | None:
        """The grad-sample mode in use (resolved after the first round)."""
        return None if self._wrapped is None else self._wrapped.mode

    # --- Opacus plumbing ----------------------------------------------------------------------
    def _wrap(self, model: nn.Module, mode: GradSampleMode) -> _Wrapped:
        from opacus.grad_sample import (
            GradSampleModule,
            GradSampleModuleExpandedWeights,
            GradSampleModuleFastGradientClipping,
        )

        base = copy.deepcopy(model).to(self.device)
        base.train()
        module: nn.Module
        if mode is GradSampleMode.HOOKS:
            module = GradSampleModule(base, batch_first=True, loss_reduction="mean")
        elif mode is GradSampleMode.FUNCTORCH:
            module = GradSampleModule(base, batch_first=True, loss_reduction="mean",
                                      force_functorch=True)
        elif mode is GradSampleMode.PRIVFL:
            from privfl.dp._fast_grad_sample import FastGradSampleModule

            module = FastGradSampleModule(base, batch_first=True, loss_reduction="mean")
        elif mode is GradSampleMode.EW:
            module = GradSampleModuleExpandedWeights(base, batch_first=True,
                                                     loss_reduction="mean")
        else:
            module = GradSampleModuleFastGradientClipping(
                base, batch_first=True, loss_reduction="mean", max_grad_norm=self.clip_norm,
                use_ghost_clipping=True)
        return _Wrapped(mode, base, module)

    def _optimizer(self, w: _Wrapped, expected_batch: float, sigma: float,
                   generator: torch.Generator | None) -> Any:
        from opacus.optimizers import DPOptimizer, DPOptimizerFastGradientClipping

        cls: type = DPOptimizerFastGradientClipping if w.mode is GradSampleMode.GHOST \
            else DPOptimizer
        if self.secure_mode and sigma > 0:
            cls = _secure_optimizer(cls)
        sgd = torch.optim.SGD(w.module.parameters(), lr=self.learning_rate)
        return cls(sgd, noise_multiplier=sigma, max_grad_norm=self.clip_norm,
                   expected_batch_size=expected_batch, loss_reduction="mean",
                   generator=generator)

    def _step(self, w: _Wrapped, opt: Any, x: torch.Tensor, y: torch.Tensor) -> float:
        crit = nn.CrossEntropyLoss()
        opt.zero_grad(set_to_none=True)
        with warnings.catch_warnings():
            # Opacus's backward hooks fire on the first layer, whose input needs no gradient.
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            if w.mode is GradSampleMode.GHOST:
                from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping

                loss = DPLossFastGradientClipping(w.module, opt, crit, "mean")(w.module(x), y)
            else:
                loss = crit(w.module(x), y)
            loss.backward()
        opt.step()
        return float(loss.detach())

    def _noise_only_step(self, w: _Wrapped, opt: Any, expected_batch: float,
                         generator: torch.Generator | None) -> None:
        """An empty Poisson batch: the update is noise alone (the analysis requires it)."""
        opt.zero_grad(set_to_none=True)
        std = self.noise_multiplier * self.clip_norm
        for p in w.module.parameters():
            if not p.requires_grad:
                continue
            if self.secure_mode and std > 0:
                z = torch.from_numpy(self._csprng.normal(p.numel(), std)).to(p)
            else:
                z = torch.normal(0.0, std, p.shape, device=p.device, generator=generator)
            p.grad = (z / expected_batch).view_as(p).to(p.dtype)
        opt.original_optimizer.step()

    # --- mode selection -----------------------------------------------------------------------
    def _probe(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> GradSampleMode:
        """Fastest mode whose σ = 0 step matches ``hooks``; timings kept in ``probe_seconds``."""
        start = [p.detach().clone() for p in model.parameters()]
        reference: list[torch.Tensor] | None = None
        wrapped: dict[GradSampleMode, _Wrapped] = {}
        for mode in _CANDIDATES:
            try:
                w = self._wrap(model, mode)
                opt = self._optimizer(w, float(len(x)), 0.0, None)
                self._step(w, opt, x, y)
            except Exception:  # a mode that cannot run this model is skipped
                continue
            after = [p.detach() for p in w.base.parameters()]
            if reference is None:
                reference = after
            elif not all(torch.allclose(a - s, r - s, rtol=1e-3, atol=1e-6)
                         for a, r, s in zip(after, reference, start, strict=True)):
                continue
            wrapped[mode] = w
        if not wrapped:
            raise ConfigurationError("no Opacus grad-sample mode can train this model.")
        if not self.secure_mode:
            # A seeded simulation promises reproducibility (and bit-identical resumes): the
            # modes agree only to rounding, so the choice must not depend on timings.
            preferred = (GradSampleMode.PRIVFL, GradSampleMode.HOOKS)
            return next((m for m in preferred if m in wrapped), next(iter(wrapped)))
        times: dict[GradSampleMode, list[float]] = {m: [] for m in wrapped}
        opts = {m: self._optimizer(w, float(len(x)), self.noise_multiplier, None)
                for m, w in wrapped.items()}
        for _ in range(7):  # interleaved, so drifting machine load hits every mode alike
            for m, w in wrapped.items():
                t = time.perf_counter()
                self._step(w, opts[m], x, y)
                times[m].append(time.perf_counter() - t)
        med = {m: statistics.median(v[2:]) for m, v in times.items()}
        self.probe_seconds = {m.value: s for m, s in med.items()}
        return min(med, key=lambda m: med[m])

    def _ensure_wrapped(self, model: nn.Module, data: ArrayDataset) -> _Wrapped:
        if self._wrapped is None:
            check_model(model)
            mode = self.grad_sample_mode
            if mode is GradSampleMode.AUTO:
                n = max(2, min(len(data), round(self.sample_rate * len(data))))
                x = torch.from_numpy(data.x[:n]).to(self.device)
                y = torch.from_numpy(data.y[:n]).to(self.device)
                mode = self._probe(model, x, y)
            self._wrapped = self._wrap(model, mode)
        return self._wrapped

    # --- the client update ----------------------------------------------------------------------
    def train(self, model: nn.Module, spec: ParamSpec, global_params: npt.NDArray[np.float32],
              data: ArrayDataset, rng: np.random.Generator, client_id: int,
              round_id: int = 0) -> ClientResult:
        """Run ``steps`` DP-SGD steps from ``global_params``.

        The client role charges its own ledger with :meth:`round_event`. The result carries the
        delta only; its ``train_loss`` is NaN (not released).
        """
        w = self._ensure_wrapped(model, data)
        spec.load_into(w.base, global_params)  # the account is untouched by a reload
        w.module.train()
        n = len(data)
        expected = self.sample_rate * n
        generator = torch.Generator(device=self.device)
        generator.manual_seed(int(rng.integers(2**63 - 1)))
        opt = self._optimizer(w, expected, self.noise_multiplier, generator)
        x_all = torch.from_numpy(data.x).to(self.device)
        y_all = torch.from_numpy(data.y).to(self.device)
        batches = self._csprng if self.secure_mode else rng
        for _ in range(self.steps):
            idx = np.flatnonzero(batches.random(n) < self.sample_rate)
            if len(idx) == 0:
                self._noise_only_step(w, opt, expected, generator)
                continue
            t = torch.from_numpy(idx).to(self.device)
            self._step(w, opt, x_all[t], y_all[t])
        local = spec.to_vector({k: v.detach().cpu() for k, v in w.base.state_dict().items()}) \
            if all(bool(torch.isfinite(p).all()) for p in w.base.parameters()) \
            else np.full(spec.dim, np.nan, np.float32)
        # The loss on private batches is not released: no ledger accounts for it.
        return ClientResult(delta=local - global_params, num_examples=n,
                            train_loss=float("nan"), steps=self.steps)
