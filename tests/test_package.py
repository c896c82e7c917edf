from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

PACKAGES = ["privfl", "privfl.core", "privfl.data", "privfl.accounting", "privfl.audit",
            "privfl.bench", "privfl.dp", "privfl.he", "privfl.secagg"]


def test_import_privfl_does_not_import_torch_or_tenseal() -> None:
    code = ("import sys, privfl, privfl.core, privfl.data, privfl.errors, privfl.core.wire, "
            "privfl.core.securesum, privfl.core.transport;"
            "bad = [m for m in ('torch', 'tenseal', 'opacus') if m in sys.modules];"
            "print(','.join(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


@pytest.mark.parametrize("name", PACKAGES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    mod = importlib.import_module(name)
    assert mod.__all__ == sorted(mod.__all__)
    assert len(set(mod.__all__)) == len(mod.__all__)
    for item in mod.__all__:
        assert getattr(mod, item) is not None, item


@pytest.mark.parametrize("name", PACKAGES)
def test_unknown_attribute_raises_attribute_error(name: str) -> None:
    mod = importlib.import_module(name)
    with pytest.raises(AttributeError):
        mod.does_not_exist  # noqa: B018


def test_error_hierarchy() -> None:
    from privfl import errors

    for name in errors.__all__:
        cls = getattr(errors, name)
        if name.endswith("Warning"):  # warnings are not errors: a run goes on
            assert issubclass(cls, UserWarning) and not issubclass(cls, errors.PrivflError)
        else:
            assert issubclass(cls, errors.PrivflError)
    assert issubclass(errors.ConfigurationError, ValueError)
    assert issubclass(errors.NonFiniteUpdateError, errors.ClientRefusedError)


def test_license_file_and_metadata_agree() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    text = (root / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["license"] == "Apache-2.0"  # an SPDX expression, not the deprecated table
    assert project["license-files"] == ["LICENSE"]
