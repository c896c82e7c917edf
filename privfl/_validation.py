"""Validation helpers that produce privfl's uniform error messages (internal)."""

from __future__ import annotations

import math
from typing import TypeVar

from privfl.errors import ConfigurationError

_N = TypeVar("_N", int, float)


def _fail(name: str, rule: str, value: object, tip: str | None) -> ConfigurationError:
    msg = f"`{name}` must be {rule}. Found {value!r}."
    if tip:
        msg += f" Tip: {tip}"
    return ConfigurationError(msg)


def require_int(name: str, value: object, *, minimum: int | None = None,
                maximum: int | None = None, tip: str | None = None) -> int:
    """Return ``value`` if it is an int (not a bool) within ``[minimum, maximum]``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise _fail(name, "an integer", value, tip)
    if minimum is not None and value < minimum:
        raise _fail(name, f">= {minimum}", value, tip)
    if maximum is not None and value > maximum:
        raise _fail(name, f"<= {maximum}", value, tip)
    return value


def require_real(name: str, value: object, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False, tip: str | None = None) -> float:
    """Return ``float(value)`` if it is a finite real in the given interval.

    ``low_open``/``high_open`` make the matching end of the interval open, so that every rule
    matches the maths (``(0, 1]`` for a sampling rate, ``(0, inf)`` for a norm bound).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _fail(name, "a real number", value, tip)
    x = float(value)
    if not math.isfinite(x):
        raise _fail(name, "finite", value, tip)
    lo_ok = low is None or (x > low if low_open else x >= low)
    hi_ok = high is None or (x < high if high_open else x <= high)
    if not (lo_ok and hi_ok):
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        if low is not None and high is None:
            rule = f"> {low}" if low_open else f">= {low}"
        elif high is not None and low is None:
            rule = f"< {high}" if high_open else f"<= {high}"
        else:
            rule = f"in {left}{lo}, {hi}{right}"
        raise _fail(name, rule, value, tip)
    return x


def require_positive(name: str, value: object, *, tip: str | None = None) -> float:
    """Return ``float(value)`` if it is finite and > 0."""
    return require_real(name, value, low=0.0, low_open=True, tip=tip)


def require_probability(name: str, value: object, *, tip: str | None = None) -> float:
    """Return ``float(value)`` if it lies in (0, 1]."""
    return require_real(name, value, low=0.0, high=1.0, low_open=True, tip=tip)
