"""ParamSpec: a model's state_dict ⇄ one flat float32 vector.

The FedAvg core works on flat vectors θ ∈ ℝᵈ; models work on named tensors. A :class:`ParamSpec`
records the floating-point entries of a state_dict (name, shape, dtype, in order) and converts
both ways, validating names, shapes and dtypes on every conversion. Non-floating buffers (such as
BatchNorm's ``num_batches_tracked``) are not part of the vector and are listed in ``skipped``.

This module does not import torch: tensors are accepted by duck typing (``.detach().cpu()``)
and :meth:`ParamSpec.to_state_dict` imports torch only when called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from privfl.errors import NonFiniteUpdateError, ShapeMismatchError

__all__ = ["ParamSpec"]


def _to_numpy(value: Any) -> npt.NDArray[Any]:
    if hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


@dataclass(frozen=True, slots=True)
class ParamSpec:
    """Names, shapes and dtypes of the floating-point entries of a state_dict.

    Attributes:
        names: Entry names in state_dict order.
        shapes: One shape per name.
        dtypes: One numpy dtype name per name (``"float32"``, ``"float64"``, …).
        skipped: Names of non-floating entries that are not part of the vector.
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[str, ...]
    skipped: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.shapes) == len(self.dtypes)):
            raise ShapeMismatchError("`names`, `shapes` and `dtypes` must have equal lengths.")
        if len(set(self.names)) != len(self.names):
            raise ShapeMismatchError("`names` must be unique.")
        if not self.names:
            raise ShapeMismatchError(
                "a ParamSpec needs at least one floating-point entry. Found none.")

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, Any]) -> ParamSpec:
        """Build the spec of ``state_dict`` (torch tensors or numpy arrays)."""
        names, shapes, dtypes, skipped = [], [], [], []
        for name, value in state_dict.items():
            arr = _to_numpy(value)
            if arr.dtype.kind != "f":
                skipped.append(name)
                continue
            names.append(name)
            shapes.append(tuple(int(s) for s in arr.shape))
            dtypes.append(arr.dtype.name)
        return cls(tuple(names), tuple(shapes), tuple(dtypes), tuple(skipped))

    @classmethod
    def from_module(cls, module: Any) -> ParamSpec:
        """Build the spec of a ``torch.nn.Module``'s state_dict."""
        return cls.from_state_dict(module.state_dict())

    @property
    def sizes(self) -> tuple[int, ...]:
        """Number of scalars in each entry."""
        return tuple(math.prod(s) for s in self.shapes)

    @property
    def dim(self) -> int:
        """Total length d of the flat vector."""
        return sum(self.sizes)

    def to_vector(self, state_dict: Mapping[str, Any]) -> npt.NDArray[np.float32]:
        """Flatten ``state_dict`` into a float32 vector of length :attr:`dim`.

        Raises:
            ShapeMismatchError: Missing or unexpected names, or a wrong shape or dtype kind.
            NonFiniteUpdateError: An entry holds NaN or Inf.
        """
        keys = [k for k in state_dict if k not in self.skipped]
        if set(keys) != set(self.names):
            missing = sorted(set(self.names) - set(keys))
            extra = sorted(set(keys) - set(self.names))
            raise ShapeMismatchError(
                f"state_dict does not match the ParamSpec: missing {missing}, unexpected {extra}.")
        out = np.empty(self.dim, dtype=np.float32)
        pos = 0
        for name, shape, size in zip(self.names, self.shapes, self.sizes, strict=True):
            arr = _to_numpy(state_dict[name])
            if tuple(arr.shape) != shape:
                raise ShapeMismatchError(
                    f"`{name}` must have shape {shape}. Found {tuple(arr.shape)}.")
            if arr.dtype.kind != "f":
                raise ShapeMismatchError(
                    f"`{name}` must be floating point. Found dtype {arr.dtype}.")
            out[pos : pos + size] = arr.reshape(-1)
            pos += size
        if not np.isfinite(out).all():
            raise NonFiniteUpdateError("state_dict contains NaN or Inf.")
        return out

    def to_arrays(self, vector: npt.NDArray[np.floating]) -> dict[str, npt.NDArray[Any]]:
        """Split a flat vector back into named numpy arrays with the recorded shapes and dtypes.

        Raises:
            ShapeMismatchError: ``vector`` is not one-dimensional of length :attr:`dim`.
        """
        vec = np.asarray(vector)
        if vec.ndim != 1 or vec.shape[0] != self.dim:
            raise ShapeMismatchError(f"vector must have shape ({self.dim},). Found {vec.shape}.")
        out: dict[str, npt.NDArray[Any]] = {}
        pos = 0
        for name, shape, dtype, size in zip(self.names, self.shapes, self.dtypes, self.sizes,
                                            strict=True):
            out[name] = vec[pos : pos + size].reshape(shape).astype(dtype, copy=True)
            pos += size
        return out

    def to_state_dict(self, vector: npt.NDArray[np.floating]) -> dict[str, Any]:
        """Split a flat vector into a dict of torch tensors (imports torch)."""
        import torch

        return {k: torch.from_numpy(v) for k, v in self.to_arrays(vector).items()}

    def load_into(self, module: Any, vector: npt.NDArray[np.floating]) -> None:
        """Copy ``vector`` into ``module``'s floating-point entries in place (skipped ones kept)."""
        import torch

        sd = module.state_dict()
        with torch.no_grad():
            for name, arr in self.to_arrays(vector).items():
                if name not in sd or tuple(sd[name].shape) != arr.shape:
                    raise ShapeMismatchError(f"module has no entry `{name}` of shape {arr.shape}.")
                sd[name].copy_(torch.from_numpy(arr))
