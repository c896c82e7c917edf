"""What every benchmark result is stamped with: git SHA, package versions, machine."""

from __future__ import annotations

import datetime as dt
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def stamp() -> dict[str, Any]:
    """privfl's stamp (git SHA, versions, hardware), flattened the way earlier results were."""
    from privfl.bench.stamp import stamp as _stamp

    s = _stamp()
    hw = s.pop("hardware")
    return {**s, "python": hw["python"], "platform": hw["platform"], "cpu": hw["cpu"],
            "cpu_count": hw["cpu_count"], "hardware": hw}


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median, min and max wall-clock seconds of ``fn`` over ``repeats`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "repeats": repeats}


def write_result(name: str, payload: dict[str, Any], out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}-{dt.datetime.now().strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps({"benchmark": name, "stamp": stamp(), **payload}, indent=2))
    return path
