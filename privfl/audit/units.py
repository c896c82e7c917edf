"""Which privacy unit an audit plants canaries for (no heavy imports: the CLI reads it)."""

from __future__ import annotations

import enum

__all__ = ["AuditUnit"]


class AuditUnit(enum.Enum):
    """The records an audit randomises: whole clients or single training examples.

    ``AUTO`` follows the run's DP mode: client-level DP is audited with canary clients, local
    DP-SGD with canary examples, and a run without DP with canary examples.
    """

    AUTO = "auto"
    EXAMPLE = "example"
    CLIENT = "client"
