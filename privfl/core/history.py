"""The record of a federated run: one :class:`RoundRecord` per round, JSON round-trippable."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from privfl._json import dumps

__all__ = ["History", "RoundRecord"]


@dataclass(kw_only=True)
class RoundRecord:
    """What happened in one round.

    Attributes:
        round_id: 1-based round number.
        selected: Clients sampled for the round.
        contributors: Clients whose update is in the aggregate.
        dropped: Client id → reason (dropout, refused non-finite update, rejected message).
        aborted: Why the round produced no update, or ``None``.
        train_loss: Mean local training loss over the clients that trained.
        test_loss: Loss of the new global model on the test set (NaN if not evaluated).
        test_accuracy: Accuracy of the new global model (NaN if not evaluated).
        bytes_up: Client → server bytes.
        bytes_down: Server → client bytes (secure-sum requests and the model broadcast).
        seconds: Wall-clock time of the phases: ``train``, ``aggregate``, ``evaluate``, ``total``.
        extra: Mechanism-specific measurements (for example the clip norm of adaptive clipping).
    """

    round_id: int
    selected: list[int]
    contributors: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    aborted: str | None = None
    train_loss: float = math.nan
    test_loss: float = math.nan
    test_accuracy: float = math.nan
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    extra: dict[str, float] = field(default_factory=dict)


def _jsonable(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_jsonable(v) for v in x]
    return x


@dataclass
class History:
    """Per-round metrics of a run, plus why it stopped."""

    rounds: list[RoundRecord] = field(default_factory=list)
    initial_accuracy: float = math.nan
    initial_loss: float = math.nan
    stopped_early: str | None = None
    withheld: list[str] = field(default_factory=list)
    """Outputs the privacy layers did not allow into this record, each with the reason."""

    def append(self, record: RoundRecord) -> None:
        """Add one round."""
        self.rounds.append(record)

    @property
    def final_accuracy(self) -> float:
        """Accuracy after the last evaluated round."""
        for r in reversed(self.rounds):
            if math.isfinite(r.test_accuracy):
                return r.test_accuracy
        return self.initial_accuracy

    def to_dict(self) -> dict[str, Any]:
        """A JSON-compatible dict (NaN becomes ``null``)."""
        out: dict[str, Any] = _jsonable({
            "initial_accuracy": self.initial_accuracy,
            "initial_loss": self.initial_loss,
            "stopped_early": self.stopped_early,
            "withheld": list(self.withheld),
            "rounds": [asdict(r) for r in self.rounds],
        })
        return out

    def save(self, path: str | Path) -> None:
        """Write ``history.json``."""
        Path(path).write_text(dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> History:
        """Read a file written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> History:
        """Inverse of :meth:`to_dict` (a ``KeyError`` or ``TypeError`` on a malformed one)."""
        raw = json.loads(json.dumps(raw))  # a deep copy of plain values

        def num(v: Any) -> float:
            return math.nan if v is None else float(v)

        rounds = []
        for r in raw["rounds"]:
            r["dropped"] = {int(k): v for k, v in r["dropped"].items()}
            for key in ("train_loss", "test_loss", "test_accuracy"):
                r[key] = num(r[key])
            rounds.append(RoundRecord(**r))
        return cls(rounds=rounds, initial_accuracy=num(raw["initial_accuracy"]),
                   initial_loss=num(raw["initial_loss"]), stopped_early=raw["stopped_early"],
                   withheld=list(raw.get("withheld", [])))
