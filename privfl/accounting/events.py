"""DP events as JSON and back, for checkpoints of privacy ledgers.

dp-accounting's events are attrs classes; their own ``to_named_tuple`` names a module and a
class that ``from_named_tuple`` would import, which is code selection by the file. Here the
class comes from a fixed whitelist of dp-accounting's event types and every field is a number,
an event, or a list of events, so a checkpoint can describe an event but never choose code.
Floats round-trip exactly (JSON's shortest repr), so a restored event is equal (and hashes
equal) to the recorded one and composes identically.
"""

from __future__ import annotations

from typing import Any

from privfl.errors import CheckpointError

__all__ = ["event_from_json", "event_to_json"]

_KINDS = ("ComposedDpEvent", "GaussianDpEvent", "LaplaceDpEvent", "NoOpDpEvent",
          "NonPrivateDpEvent", "PoissonSampledDpEvent", "RandomizedResponseDpEvent",
          "SampledWithReplacementDpEvent", "SampledWithoutReplacementDpEvent",
          "SelfComposedDpEvent", "ZCDpEvent")
_MAX_DEPTH = 16


def _classes() -> dict[str, type]:
    import dp_accounting

    return {name: getattr(dp_accounting, name) for name in _KINDS}


def event_to_json(event: Any) -> dict[str, Any]:
    """``{"type": class name, field: value | event | [events]}``."""
    import attr

    name = type(event).__name__
    if name not in _KINDS or _classes()[name] is not type(event):
        raise CheckpointError(f"cannot checkpoint a {type(event).__name__}")
    out: dict[str, Any] = {"type": name}
    for f in attr.fields(type(event)):  # type: ignore[arg-type]
        value = getattr(event, f.name)
        if isinstance(value, (list, tuple)):
            out[f.name] = [event_to_json(v) for v in value]
        elif type(value).__name__ in _KINDS:
            out[f.name] = event_to_json(value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[f.name] = value
        else:
            raise CheckpointError(f"{name}.{f.name} = {value!r} cannot be checkpointed")
    return out


def event_from_json(data: Any, _depth: int = 0) -> Any:
    """The event :func:`event_to_json` described (a :class:`CheckpointError` otherwise)."""
    import attr

    if _depth > _MAX_DEPTH or not isinstance(data, dict):
        raise CheckpointError(f"malformed DP event {data!r:.80}")
    cls = _classes().get(data.get("type", ""))
    if cls is None:
        raise CheckpointError(f"unknown DP event type {data.get('type')!r}")
    fields = {f.name for f in attr.fields(cls)}
    if set(data) - {"type"} != fields:
        raise CheckpointError(f"{cls.__name__} needs fields {sorted(fields)}; found "
                              f"{sorted(set(data) - {'type'})}")
    kwargs: dict[str, Any] = {}
    for key in fields:
        value = data[key]
        if isinstance(value, list):
            kwargs[key] = [event_from_json(v, _depth + 1) for v in value]
        elif isinstance(value, dict):
            kwargs[key] = event_from_json(value, _depth + 1)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            kwargs[key] = value
        else:
            raise CheckpointError(f"{cls.__name__}.{key} = {value!r:.40} is not a number")
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"invalid {cls.__name__}: {exc}") from exc
