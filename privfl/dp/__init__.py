"""Differential privacy: local DP-SGD (Opacus), client-level DP with fixed or adaptive clipping."""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

if TYPE_CHECKING:
    from privfl.dp.central import CentralDP, client_level_event
    from privfl.dp.clipping import AdaptiveClipping, FixedClipping, clip_l2, update_noise_multiplier
    from privfl.dp.local import DPSGDClientUpdate, GradSampleMode, check_model

__all__ = [
    "AdaptiveClipping",
    "CentralDP",
    "DPSGDClientUpdate",
    "FixedClipping",
    "GradSampleMode",
    "check_model",
    "client_level_event",
    "clip_l2",
    "update_noise_multiplier",
]

_EXPORTS = {
    "CentralDP": "privfl.dp.central",
    "client_level_event": "privfl.dp.central",
    "AdaptiveClipping": "privfl.dp.clipping",
    "FixedClipping": "privfl.dp.clipping",
    "clip_l2": "privfl.dp.clipping",
    "update_noise_multiplier": "privfl.dp.clipping",
    "DPSGDClientUpdate": "privfl.dp.local",
    "GradSampleMode": "privfl.dp.local",
    "check_model": "privfl.dp.local",
}

__getattr__ = lazy_getattr("privfl.dp", _EXPORTS)
