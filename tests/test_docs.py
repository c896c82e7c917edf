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


def _public_modules() -> list[str]:
    import pkgutil

    import privfl

    return sorted(m.name for m in pkgutil.walk_packages(privfl.__path__, "privfl.")
                  if not m.ispkg and not any(p.startswith("_") for p in m.name.split(".")[1:]))


def test_api_reference_covers_every_public_name() -> None:
    """Every public module is rendered by mkdocstrings, and so every name in an ``__all__``."""
    import importlib

    pages = "\n".join(p.read_text() for p in (DOCS / "reference" / "api").glob("*.md"))
    rendered = set(re.findall(r"^::: (\S+)$", pages, flags=re.MULTILINE))
    modules = _public_modules()
    assert set(modules) <= rendered, sorted(set(modules) - rendered)
    assert rendered <= set(modules), sorted(rendered - set(modules))  # nothing stale
    missing = []
    for name in modules:
        module = importlib.import_module(name)
        for public in getattr(module, "__all__", []):
            obj = getattr(module, public)
            home = getattr(obj, "__module__", name)
            if home.startswith("privfl.") and home not in rendered and \
                    not any(part.startswith("_") for part in home.split(".")[1:]):
                missing.append(f"{name}.{public} (defined in {home})")
    assert not missing, missing
    nav = (DOCS.parent / "mkdocs.yml").read_text()
    for page in (DOCS / "reference" / "api").glob("*.md"):
        assert f"reference/api/{page.name}" in nav, page.name
    assert "mkdocstrings" in nav


def test_how_to_section_and_license() -> None:
    assert len(list((DOCS / "how-to").glob("*.md"))) >= 3
    root = DOCS.parent
    assert "Apache License" in (root / "LICENSE").read_text()
    import tomllib

    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0" and "LICENSE" in project["license-files"]
