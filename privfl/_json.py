"""JSON that every parser accepts: no NaN or Infinity tokens.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which are not JSON (RFC 8259):
JavaScript's ``JSON.parse`` and most strict parsers reject them. privfl writes a missing number
(NaN) as ``null`` and an unbounded one as the string ``"inf"`` / ``"-inf"``.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any

__all__ = ["dumps", "finite"]


def finite(x: Any) -> Any:
    """A copy of ``x`` with NaN as None, ±∞ as "inf"/"-inf", enums as values, tuples as lists."""
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [finite(v) for v in x]
    if isinstance(x, enum.Enum):
        return x.value
    return x


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of :func:`finite` ``(obj)``, refusing any non-finite number left."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)
