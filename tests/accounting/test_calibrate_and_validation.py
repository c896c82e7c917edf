from __future__ import annotations

import pytest

from privfl.accounting import (
    Accountant,
    Budget,
    calibrate_noise_multiplier,
    dpsgd_epsilon,
    epsilon,
)
from privfl.errors import ConfigurationError, PrivflError, UnsupportedEventError


@pytest.mark.parametrize("acc", list(Accountant))
def test_calibration_gives_the_smallest_sigma(acc: Accountant) -> None:
    kw = {"sample_rate": 0.05, "steps": 400, "delta": 1e-5, "accountant": acc}
    sigma = calibrate_noise_multiplier(target_epsilon=3.0, rel_tol=1e-3, **kw)  # type: ignore[arg-type]
    assert dpsgd_epsilon(noise_multiplier=sigma, **kw) <= 3.0  # type: ignore[arg-type]
    assert dpsgd_epsilon(noise_multiplier=sigma * 0.995, **kw) > 3.0  # type: ignore[arg-type]


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"target_epsilon": 0.0}, "target_epsilon"),
    ({"target_epsilon": -1.0}, "target_epsilon"),
    ({"delta": 0.0}, "delta"),
    ({"delta": 1.0}, "delta"),
    ({"sample_rate": 0.0}, "sample_rate"),
    ({"sample_rate": 1.5}, "sample_rate"),
    ({"steps": 0}, "steps"),
])
def test_calibration_rejects_bad_arguments(kwargs: dict[str, float], name: str) -> None:
    base = {"target_epsilon": 1.0, "delta": 1e-5, "sample_rate": 0.1, "steps": 10}
    with pytest.raises(ConfigurationError, match=f"`{name}`"):
        calibrate_noise_multiplier(**{**base, **kwargs})  # type: ignore[arg-type]


def test_unreachable_target_is_reported() -> None:
    with pytest.raises(ConfigurationError, match="cannot be reached"):
        calibrate_noise_multiplier(target_epsilon=1e-9, delta=1e-12, sample_rate=1.0,
                                   steps=10**6)


@pytest.mark.parametrize(("kwargs", "name"), [
    ({"noise_multiplier": -0.5}, "noise_multiplier"),
    ({"sample_rate": 0.0}, "sample_rate"),
    ({"delta": 2.0}, "delta"),
    ({"steps": -1}, "steps"),
])
def test_dpsgd_epsilon_validation(kwargs: dict[str, float], name: str) -> None:
    base = {"sample_rate": 0.1, "noise_multiplier": 1.0, "steps": 10, "delta": 1e-5}
    with pytest.raises(ConfigurationError, match=f"`{name}`"):
        dpsgd_epsilon(**{**base, **kwargs})  # type: ignore[arg-type]


def test_budget_validation() -> None:
    for eps, delta in [(0.0, 1e-5), (-1.0, 1e-5), (1.0, 0.0), (1.0, 1.0), (float("inf"), 1e-5)]:
        with pytest.raises(PrivflError):
            Budget(eps, delta)


def test_unsupported_event_is_a_clear_error() -> None:
    import dp_accounting

    wor = dp_accounting.SampledWithoutReplacementDpEvent(100, 10,
                                                         dp_accounting.GaussianDpEvent(1.0))
    with pytest.raises(UnsupportedEventError, match="PLD"):
        epsilon(wor, delta=1e-5, accountant=Accountant.PLD)
