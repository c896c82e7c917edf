from __future__ import annotations

import os

import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(autouse=True)
def _torch_threads() -> None:
    """Keep torch to one thread per test: stable timings on the 2-core CI machine."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
