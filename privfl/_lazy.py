"""Lazy re-exports for package ``__init__`` modules (internal).

``import privfl`` must not import torch or tenseal, yet ``privfl.FedAvg`` should work. Each
package lists ``name -> defining module`` and resolves a name on first access (PEP 562).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_getattr(package: str, exports: Mapping[str, str]) -> Callable[[str], Any]:
    """Build a module-level ``__getattr__`` that imports ``exports[name]`` on demand."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
