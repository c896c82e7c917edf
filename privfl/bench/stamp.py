"""What every benchmark result is stamped with: git SHA, package versions, hardware, time."""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

__all__ = ["PACKAGES", "git_sha", "hardware", "stamp", "versions"]

PACKAGES = ["privfl", "numpy", "scipy", "torch", "opacus", "tenseal", "dp-accounting",
            "cryptography", "scikit-learn", "flwr"]


def git_sha(where: Path | None = None) -> str:
    """HEAD of the git checkout holding ``where`` (default: the privfl sources).

    ``-dirty`` is appended if tracked files differ from it; ``unknown`` outside a checkout.
    """
    cwd = where or Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             check=True, cwd=cwd, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, cwd=cwd,
                               timeout=10).stdout.strip()
        return out.stdout.strip() + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def versions() -> dict[str, str | None]:
    """Installed versions of the packages results depend on (``None``: not installed)."""
    out: dict[str, str | None] = {}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = None
    return out


def hardware() -> dict[str, Any]:
    """CPU, core count, memory, and the GPU torch would use (if torch is importable)."""
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"cpu": _cpu_model(), "cpu_count": os.cpu_count(), "memory_bytes": _memory_bytes(),
            "gpu": gpu, "platform": platform.platform(), "python": platform.python_version()}


def stamp() -> dict[str, Any]:
    """Everything a result needs to be traced back: code, packages, machine, time, load."""
    return {"git_sha": git_sha(),
            "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "versions": versions(), "hardware": hardware(),
            "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
