"""Lean per-example gradients for Conv2d and Linear on top of Opacus's hooks (internal).

Opacus's ``hooks`` mode computes per-example gradients with a generic ``unfold2d`` (pad, strided
view, contiguous copy) and then, for every parameter, zero-fills a ``[max_batch_len, *shape]``
buffer and copies the result into it. For the common case — ``Conv2d`` with ``groups=1`` and
zero padding, and ``Linear`` on ``[batch, features]`` inputs — this module computes

* Conv2d: ``G_b = g_b · unfold(x_b)ᵀ`` with one ATen ``im2col`` over the whole batch and one
  batched matmul;
* Linear: ``G_b = g_b x_bᵀ`` with one batched outer product;

and stores the result as the parameter's ``_current_grad_sample`` directly (accumulating if the
layer was used twice in the forward pass), so the buffer fill and copy disappear. Any other
configuration falls back to Opacus's own grad sampler. The maths is identical; privfl's
automatic mode selection additionally checks, on the user's model, that a step with σ = 0 gives
the same update as Opacus's ``hooks``.
"""

from __future__ import annotations

from typing import Any

import torch
from opacus.grad_sample import GradSampleModule
from opacus.grad_sample.conv import compute_conv_grad_sample
from opacus.grad_sample.linear import compute_linear_grad_sample
from torch import nn
from torch.nn import functional as F

__all__ = ["FastGradSampleModule"]


def _store(layer: nn.Module, param: torch.Tensor, grad_sample: torch.Tensor) -> None:
    if not param.requires_grad:
        return
    n = grad_sample.shape[0]
    current = getattr(param, "_current_grad_sample", None)
    if current is not None:
        current[:n] += grad_sample
        return
    max_len = int(getattr(layer, "max_batch_len", n))
    if n != max_len:
        padded = grad_sample.new_zeros((max_len, *grad_sample.shape[1:]))
        padded[:n] = grad_sample
        grad_sample = padded
    param._current_grad_sample = grad_sample  # type: ignore[attr-defined]


def _conv2d(layer: nn.Conv2d, activations: list[torch.Tensor],
            backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    x = activations[0]
    if (layer.groups != 1 or isinstance(layer.padding, str) or layer.padding_mode != "zeros"
            or x.shape[0] == 0):
        out: dict[nn.Parameter, torch.Tensor] = compute_conv_grad_sample(layer, activations,
                                                                        backprops)
        return out
    x = x.to(backprops.dtype)
    n = x.shape[0]
    g = backprops.reshape(n, layer.out_channels, -1)
    if layer.weight.requires_grad:
        # One im2col over the batch seen as a single image with n·C channels: ATen's CPU
        # im2col otherwise loops over the batch in Python-visible select() calls.
        cols = F.unfold(x.reshape(1, n * x.shape[1], *x.shape[2:]), layer.kernel_size,
                        dilation=layer.dilation, padding=layer.padding,
                        stride=layer.stride).view(n, -1, g.shape[2])
        _store(layer, layer.weight, torch.bmm(g, cols.transpose(1, 2)).view(n, *layer.weight.shape))
    if layer.bias is not None:
        _store(layer, layer.bias, g.sum(dim=2))
    return {}


def _linear(layer: nn.Linear, activations: list[torch.Tensor],
            backprops: torch.Tensor) -> dict[nn.Parameter, torch.Tensor]:
    x = activations[0]
    if x.dim() != 2 or backprops.dim() != 2 or x.shape[0] == 0:
        out: dict[nn.Parameter, torch.Tensor] = compute_linear_grad_sample(layer, activations,
                                                                          backprops)
        return out
    x = x.to(backprops.dtype)
    if layer.weight.requires_grad:
        _store(layer, layer.weight, torch.bmm(backprops.unsqueeze(2), x.unsqueeze(1)))
    if layer.bias is not None:
        _store(layer, layer.bias, backprops)
    return {}


class FastGradSampleModule(GradSampleModule):  # type: ignore[misc]
    """Opacus's hooks-based GradSampleModule with privfl's Conv2d and Linear samplers.

    The samplers live on this subclass only; Opacus's global registry (and so its ``hooks``
    mode) is left unchanged.
    """

    GRAD_SAMPLERS: dict[type, Any] = {**GradSampleModule.GRAD_SAMPLERS,
                                      nn.Conv2d: _conv2d, nn.Linear: _linear}
