from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from privfl.cli import main
from privfl.experiment import RunConfig, SamplingName


def test_short_run_writes_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--rounds", "3", "--out", str(tmp_path), "--name", "r1", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    run = tmp_path / "r1"
    assert str(run) in out
    hist = json.loads((run / "history.json").read_text())
    assert len(hist["rounds"]) == 3
    assert (run / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cfg = tomllib.loads((run / "config.toml").read_text())["run"]
    assert cfg["rounds"] == 3 and cfg["dataset"] == "digits" and cfg["alpha"] == 0.5


def test_toml_config_and_flag_precedence(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text('[run]\nrounds = 2\nsampling = "poisson"\nsample_rate = 0.5\nlr = 0.05\n')
    cfg = RunConfig.from_toml(conf, overrides={"lr": 0.3})
    assert cfg.rounds == 2 and cfg.sampling is SamplingName.POISSON and cfg.lr == 0.3
    rc = main(["run", "--config", str(conf), "--out", str(tmp_path), "--name", "r2", "--quiet",
               "--dataset", "synthetic", "--clients", "5"])
    assert rc == 0
    resolved = tomllib.loads((tmp_path / "r2" / "config.toml").read_text())["run"]
    assert resolved["dataset"] == "synthetic" and resolved["sampling"] == "poisson"
    assert RunConfig.from_toml(tmp_path / "r2" / "config.toml").clients == 5


@pytest.mark.parametrize(("argv", "message"), [
    (["--rounds", "0"], "`rounds` must be >= 1. Found 0."),
    (["--alpha", "-1"], "`alpha` must be > 0.0. Found -1.0."),
    (["--sampling", "poisson", "--sample-rate", "1.5"], "`sample_rate` must be in (0.0, 1.0]"),
    (["--clients-per-round", "50"], "`clients_per_round` must be <= 10"),
])
def test_bad_values_exit_2_with_message(argv: list[str], message: str, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--out", str(tmp_path), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err


def test_unknown_toml_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text("roundz = 3\n")
    assert main(["run", "--config", str(conf), "--quiet"]) == 2
    assert "unknown option `roundz`" in capsys.readouterr().err


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for f in RunConfig.__dataclass_fields__:
        assert "--" + f.replace("_", "-") in text
