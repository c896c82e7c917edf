from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from privfl.core.params import ParamSpec
from privfl.errors import NonFiniteUpdateError, ShapeMismatchError


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2).double())


def test_roundtrip_preserves_values_shapes_and_dtypes() -> None:
    m = _model()
    spec = ParamSpec.from_module(m)
    assert "1.num_batches_tracked" in spec.skipped
    assert spec.dim == 3 * 4 + 4 + 4 * 4 + 4 * 2 + 2
    vec = spec.to_vector(m.state_dict())
    assert vec.dtype == np.float32 and vec.shape == (spec.dim,)
    sd = spec.to_state_dict(vec)
    assert sd["2.weight"].dtype == torch.float64
    for k, v in sd.items():
        np.testing.assert_allclose(v.numpy(), m.state_dict()[k].numpy(), rtol=1e-6)
    m2 = _model()
    spec.load_into(m2, vec + 1)
    np.testing.assert_allclose(spec.to_vector(m2.state_dict()), vec + 1, rtol=1e-6)


def test_wrong_shape_missing_and_extra_keys() -> None:
    m = _model()
    spec = ParamSpec.from_module(m)
    sd = dict(m.state_dict())
    bad = dict(sd)
    bad["0.weight"] = torch.zeros(4, 4)
    with pytest.raises(ShapeMismatchError, match=r"`0.weight` must have shape \(4, 3\)"):
        spec.to_vector(bad)
    missing = {k: v for k, v in sd.items() if k != "0.bias"}
    with pytest.raises(ShapeMismatchError, match="missing"):
        spec.to_vector(missing)
    with pytest.raises(ShapeMismatchError, match="unexpected"):
        spec.to_vector({**sd, "extra": torch.zeros(1)})
    with pytest.raises(ShapeMismatchError, match="shape"):
        spec.to_arrays(np.zeros(spec.dim + 1, np.float32))


def test_non_finite_entries_rejected() -> None:
    m = _model()
    spec = ParamSpec.from_module(m)
    sd = dict(m.state_dict())
    sd["0.bias"] = torch.tensor([0.0, float("inf"), 0.0, 0.0])
    with pytest.raises(NonFiniteUpdateError):
        spec.to_vector(sd)


def test_numpy_state_dict_is_accepted() -> None:
    sd = {"w": np.ones((2, 2), np.float32), "step": np.array(3)}
    spec = ParamSpec.from_state_dict(sd)
    assert spec.names == ("w",) and spec.skipped == ("step",)
    np.testing.assert_array_equal(spec.to_vector(sd), np.ones(4, np.float32))
