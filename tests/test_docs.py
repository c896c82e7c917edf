"""The tutorials' code is executed, block after block, in one namespace per page."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
TUTORIALS = sorted((DOCS / "tutorials").glob("*.md"))


def _python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


def _marks(page: Path) -> list[pytest.MarkDecorator]:
    """A page that starts with ``<!-- tests: slow`` runs in the slow lane."""
    if page.read_text().startswith("<!-- tests: slow"):
        return [pytest.mark.slow, pytest.mark.timeout(1200)]
    return []


@pytest.mark.parametrize("page", [pytest.param(p, marks=_marks(p), id=p.stem)
                                  for p in TUTORIALS])
def test_tutorial_runs(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = _python_blocks(page)
    assert blocks, f"{page.name} has no python code"
    namespace: dict[str, object] = {"__name__": "__tutorial__"}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page.name}[block {i}]", "exec"), namespace)


def test_tutorials_exist() -> None:
    assert (DOCS / "tutorials" / "getting-started.md") in TUTORIALS
    assert (DOCS / "tutorials" / "measure-privacy-costs.md") in TUTORIALS
    assert _marks(DOCS / "tutorials" / "measure-privacy-costs.md")
