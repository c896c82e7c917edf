"""Secure aggregation by additive secret sharing. Hazmat: prefer the recipes and the CLI.

Single-server pairwise masking (SecAgg / SecAgg+) that survives dropouts, and multi-server
additive sharing; both over a fixed-point ring derived from the ``ValueSpec``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

if TYPE_CHECKING:
    from privfl.core.ring import RingEncoding, ring_for
    from privfl.secagg.graph import harary_graph, plan_graph
    from privfl.secagg.multiserver import MultiServerSecureSum
    from privfl.secagg.pairwise import PairwiseSecureSum, UnmaskRefusedError
    from privfl.secagg.params import SecAggParams, ServerModel, find_params
    from privfl.secagg.unmask import Unmasker, UnmaskExecutor

__all__ = [
    "MultiServerSecureSum",
    "PairwiseSecureSum",
    "RingEncoding",
    "SecAggParams",
    "ServerModel",
    "UnmaskExecutor",
    "UnmaskRefusedError",
    "Unmasker",
    "find_params",
    "harary_graph",
    "plan_graph",
    "ring_for",
]

_EXPORTS = {
    "SecAggParams": "privfl.secagg.params",
    "ServerModel": "privfl.secagg.params",
    "find_params": "privfl.secagg.params",
    "harary_graph": "privfl.secagg.graph",
    "plan_graph": "privfl.secagg.graph",
    "MultiServerSecureSum": "privfl.secagg.multiserver",
    "PairwiseSecureSum": "privfl.secagg.pairwise",
    "UnmaskRefusedError": "privfl.secagg.pairwise",
    "UnmaskExecutor": "privfl.secagg.unmask",
    "Unmasker": "privfl.secagg.unmask",
    "RingEncoding": "privfl.core.ring",
    "ring_for": "privfl.core.ring",
}

__getattr__ = lazy_getattr("privfl.secagg", _EXPORTS)
