"""What a run may release: the driver's side of "release nothing the ledger does not account".

A differential-privacy guarantee covers the outputs its mechanism produces (noised models) and
whatever is computed from them, nothing else. A federated run produces more: exact training
losses measured on private data, the list of clients that took part in each round, who dropped
out, how many bytes moved. Each of those is an exact function of private data or of the private
subsampling randomness, so writing it to ``history.json`` releases something no ledger charged:

* an exact DP-SGD training loss tells a data set from its neighbour with certainty;
* a participant list tells an observer whether a client was in a round's sample, which voids
  the amplification by sampling that client-level ε relies on.

Privacy components (DP client updates and aggregation hooks) declare a :class:`ReleasePolicy`:
which outputs the driver must withhold, and whether client sampling must come from the CSPRNG
(a sample drawn from the seeded simulation generator can be replayed from the seed in
``config.toml``). The driver merges the policies of everything it runs and applies them before
a round is recorded; :class:`~privfl.core.history.History` lists what was withheld and why.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from privfl.core.history import RoundRecord

__all__ = ["PrivacyComponent", "ReleasePolicy", "Withheld", "merge_policies", "redact"]


class Withheld(enum.Enum):
    """An output of a round that a privacy component forbids the driver to record."""

    TRAIN_LOSS = "train_loss"
    """Clients' exact training losses (computed on private data, not noised)."""
    PARTICIPATION = "participation"
    """Who was sampled, who contributed or dropped, abort reasons and traffic counts."""

    @property
    def reason(self) -> str:
        """Why it is withheld, for the run's record."""
        if self is Withheld.TRAIN_LOSS:
            return ("train_loss: exact losses on private data are outside every DP ledger "
                    "(one example changes them with certainty)")
        return ("participation (selected, contributors, dropped, abort reasons, bytes): the "
                "sample is private randomness that client-level amplification relies on")


@dataclass(frozen=True, slots=True)
class ReleasePolicy:
    """What a privacy component requires of the driver.

    Attributes:
        withheld: Outputs the driver must not record.
        secure_sampling: Client sampling must draw from the OS-seeded CSPRNG, not the seeded
            simulation generator (required for amplification by sampling to hold against
            anyone who can read the seed).
    """

    withheld: frozenset[Withheld] = frozenset()
    secure_sampling: bool = False


@runtime_checkable
class PrivacyComponent(Protocol):
    """A client update or hook whose guarantee restricts what the driver may release."""

    def release_policy(self) -> ReleasePolicy:
        """The restrictions this component's guarantee needs."""
        ...


def merge_policies(components: Iterable[object]) -> ReleasePolicy:
    """The union of the policies of every :class:`PrivacyComponent` among ``components``."""
    withheld: set[Withheld] = set()
    secure = False
    for c in components:
        if isinstance(c, PrivacyComponent):
            p = c.release_policy()
            withheld |= p.withheld
            secure = secure or p.secure_sampling
    return ReleasePolicy(withheld=frozenset(withheld), secure_sampling=secure)


def redact(record: RoundRecord, policy: ReleasePolicy) -> None:
    """Remove from ``record`` what ``policy`` withholds (in place)."""
    if Withheld.TRAIN_LOSS in policy.withheld:
        record.train_loss = math.nan
    if Withheld.PARTICIPATION in policy.withheld:
        record.selected = []
        record.contributors = []
        record.dropped = {}
        record.bytes_up = record.bytes_down = 0
        if record.aborted is not None:
            record.aborted = "no update this round (the reason names participants: withheld)"
