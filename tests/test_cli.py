from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from privfl.cli import main
from privfl.errors import ConfigurationError
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
    err = capsys.readouterr().err
    assert "unknown option `roundz`. Did you mean `rounds`?" in err
    assert "secure_randomness" not in err  # the closest key, not all 40 of them
    conf.write_text("zzzz = 3\n")
    assert main(["run", "--config", str(conf), "--quiet"]) == 2
    assert "`privfl run --help` lists every option" in capsys.readouterr().err


@pytest.mark.parametrize(("line", "message"), [
    ('secure_randomness = "false"', "`secure_randomness` must be true or false. Found 'false'"),
    ('synthetic_iid = "yes"', "`synthetic_iid` must be true or false. Found 'yes'"),
    ("audit = 1", "`audit` must be true or false. Found 1 (int)"),
    ('rounds = "3"', "`rounds` must be an integer. Found '3'"),
    ("rounds = 2.5", "`rounds` must be an integer. Found 2.5"),
    ("rounds = true", "`rounds` must be an integer. Found True"),
    ('lr = "0.1"', "`lr` must be a number. Found '0.1'"),
    ("name = 5", "`name` must be a string. Found 5"),
])
def test_toml_values_are_type_checked(line: str, message: str, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    """A string "false" must never turn a boolean on; nothing is written back as a string."""
    conf = tmp_path / "c.toml"
    conf.write_text(line + "\n")
    assert main(["run", "--config", str(conf), "--out", str(tmp_path), "--quiet"]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.glob("*/config.toml"))  # nothing ran


def test_direct_construction_is_type_checked_too() -> None:
    from privfl.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="must be true or false"):
        RunConfig(secure_randomness="false")  # type: ignore[arg-type]
    assert RunConfig(lr=1).lr == 1.0 and isinstance(RunConfig(lr=1).lr, float)


def test_a_bad_flag_value_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--rounds", "abc"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid int value: 'abc'" in err[0] and "--help" in err[0]


@pytest.mark.parametrize("where", ["proc", "file"])
def test_an_unusable_out_is_one_line(where: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    if where == "file":
        out = tmp_path / "afile"
        out.write_text("x")
    else:
        out = Path("/proc/nope")
    assert main(["run", "--out", str(out), "--rounds", "1"]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and f"cannot use --out '{out}'" in lines[0]
    assert "Traceback" not in captured.err and "round" not in captured.out


def test_help_lists_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    for f in RunConfig.__dataclass_fields__:
        assert "--" + f.replace("_", "-") in text


def test_dp_local_run_writes_report_and_report_command(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--dp", "local", "--epsilon", "4", "--delta", "1e-5", "--rounds", "3",
               "--local-steps", "4", "--dp-sample-rate", "0.1", "--grad-sample-mode", "ew",
               "--out", str(tmp_path), "--name", "dp", "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "epsilon" in out and "worst client" in out
    run = tmp_path / "dp"
    assert (run / "privacy_epsilon.png").exists()
    report = json.loads((run / "privacy_report.json").read_text())
    worst = max(u["epsilon"] for u in report["units"])
    assert 3.0 < worst <= 4.0  # calibrated to end at the target, never above it
    assert main(["report", str(run)]) == 0
    md = capsys.readouterr().out
    assert "# Privacy report" in md and "DP-SGD (Opacus)" in md and "PLD" in md


@pytest.mark.parametrize("mode", ["central", "adaptive"])
def test_dp_central_modes(tmp_path: Path, mode: str, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--dp", mode, "--epsilon", "10", "--rounds", "4", "--clients", "20",
               "--sampling", "poisson", "--sample-rate", "0.5", "--clipped-count-stddev", "2",
               "--out", str(tmp_path), "--name", mode, "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / mode / "privacy_report.json").read_text())
    (unit,) = report["units"]
    assert unit["unit"] == "client" and unit["epsilon"] <= 10.0
    hist = json.loads((tmp_path / mode / "history.json").read_text())
    assert all("clip_norm" in r["extra"] for r in hist["rounds"])


@pytest.mark.parametrize(("argv", "message"), [
    (["--dp", "local"], "needs a target"),
    (["--epsilon", "3"], "`dp` is 'off'"),
    (["--dp", "central", "--epsilon", "-1"], "`epsilon` must be >= 0.0"),
    (["--dp", "central", "--epsilon", "1", "--delta", "1.5"], "`delta` must be in (0.0, 1.0)"),
    (["--dp", "local", "--noise-multiplier", "-1"], "`noise_multiplier` must be >= 0.0"),
    (["--dp", "local", "--epsilon", "1", "--dp-sample-rate", "0"], "`dp_sample_rate`"),
    (["--dp", "adaptive", "--epsilon", "0.5", "--rounds", "5", "--clipped-count-stddev", "0.5"],
     "`clipped_count_stddev` to "),
])
def test_dp_bad_values(argv: list[str], message: str, tmp_path: Path,
                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--out", str(tmp_path), "--quiet", *argv]) == 2
    assert message in capsys.readouterr().err


def test_report_of_a_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("dp", [
    [], ["--dp", "local", "--epsilon", "8", "--local-steps", "3", "--grad-sample-mode", "ew"],
    ["--dp", "central", "--epsilon", "10", "--sampling", "poisson", "--sample-rate", "0.8"],
    ["--dp", "adaptive", "--epsilon", "10", "--sampling", "poisson", "--sample-rate", "0.8",
     "--clipped-count-stddev", "2"],
], ids=["off", "local", "central", "adaptive"])
def test_secure_ckks_with_every_dp_mode(dp: list[str], tmp_path: Path) -> None:
    rc = main(["run", "--secure", "ckks", "--rounds", "2", "--out", str(tmp_path), "--name", "r",
               "--quiet", *dp])
    assert rc == 0
    report = json.loads((tmp_path / "r" / "privacy_report.json").read_text())
    (trust,) = report["trust_assumptions"]
    assert trust["mechanism"] == "ckks" and trust["server_sees"] == "ciphertext"
    assert "colluding" in trust["broken_by"]
    hist = json.loads((tmp_path / "r" / "history.json").read_text())
    assert all(r["aborted"] is None for r in hist["rounds"])


_SECURE_DP = [
    ("secagg", []), ("multiserver", []), ("secagg+", []),
    ("secagg", ["--dp", "central", "--epsilon", "10", "--sampling", "poisson",
                "--sample-rate", "0.8"]),
    ("multiserver", ["--dp", "central", "--epsilon", "10", "--sampling", "poisson",
                     "--sample-rate", "0.8"]),
    ("secagg+", ["--dp", "local", "--epsilon", "8", "--local-steps", "3",
                 "--grad-sample-mode", "ew"]),
    ("secagg+", ["--dp", "adaptive", "--epsilon", "10", "--sampling", "poisson",
                 "--sample-rate", "0.8", "--clipped-count-stddev", "2"]),
]


@pytest.mark.parametrize(("secure", "dp"), _SECURE_DP,
                         ids=[f"{s}-{d[1] if d else 'off'}" for s, d in _SECURE_DP])
def test_secure_aggregation_with_dp_modes(secure: str, dp: list[str], tmp_path: Path) -> None:
    rc = main(["run", "--secure", secure, "--rounds", "2", "--out", str(tmp_path),
               "--name", "r", "--quiet", *dp])
    assert rc == 0
    report = json.loads((tmp_path / "r" / "privacy_report.json").read_text())
    (trust,) = report["trust_assumptions"]
    assert trust["mechanism"] == secure and trust["server_sees"] in ("masked", "shares")
    if secure != "multiserver":
        assert any("holders" in n for n in report["notes"])


@pytest.mark.parametrize("secure", ["secagg+", "multiserver"])
def test_distributed_dp_cli(secure: str, tmp_path: Path,
                            capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--dp", "distributed", "--epsilon", "8", "--secure", secure, "--rounds",
               "2", "--weighting", "uniform", "--out", str(tmp_path), "--name", "r", "--quiet"])
    assert rc == 0
    report = json.loads((tmp_path / "r" / "privacy_report.json").read_text())
    (unit,) = report["units"]
    assert unit["neighboring_relation"] == "replace_with_zero" and unit["epsilon"] <= 8
    assert any("noised sum" in c for sc in report["scopes"] for c in sc["covers"])
    assert main(["run", "--dp", "distributed", "--epsilon", "8", "--quiet",
                 "--out", str(tmp_path)]) == 2
    assert "ring secure sum" in capsys.readouterr().err


def _strict(text: str) -> object:
    """Parse as a strict JSON parser does (JavaScript's JSON.parse rejects NaN and Infinity)."""
    def refuse(token: str) -> object:
        raise ValueError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_every_json_of_a_run_is_strict_json_and_no_dp_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--out", str(tmp_path), "--name", "nodp", "--rounds", "1",
                 "--quiet"]) == 0
    run = tmp_path / "nodp"
    report = _strict((run / "privacy_report.json").read_text())
    assert isinstance(report, dict) and report["delta"] is None and report["units"] == []
    _strict((run / "history.json").read_text())
    md = (run / "privacy_report.md").read_text()
    assert "No differential privacy" in md and "nan" not in md.lower()
    assert main(["report", str(run)]) == 0
    assert "No differential privacy" in capsys.readouterr().out
    # a DP run whose training losses are withheld (NaN in memory) and an audited run
    assert main(["audit", "--out", str(tmp_path), "--name", "dp", "--rounds", "2", "--quiet",
                 "--dp", "local", "--epsilon", "4", "--canaries", "16"]) == 0
    for name in ("privacy_report.json", "history.json", "audit.json"):
        _strict((tmp_path / "dp" / name).read_text())


def test_a_run_sets_torch_threads_and_restores_them(tmp_path: Path) -> None:
    import torch

    from privfl.experiment import DEFAULT_THREADS, run_experiment

    before = torch.get_num_threads()
    seen: list[int] = []
    for threads in (0, 2):
        cfg = RunConfig(rounds=1, threads=threads, out=str(tmp_path), name=f"t{threads}")
        run_experiment(cfg, on_round=lambda _r: seen.append(torch.get_num_threads()),
                       plots=False)
        assert torch.get_num_threads() == before
    assert seen == [DEFAULT_THREADS, 2]
    assert main(["run", "--threads", "-1", "--quiet", "--out", str(tmp_path)]) == 2


def test_a_taken_name_is_refused_and_overwrite_leaves_only_this_runs_files(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["run", "--out", str(tmp_path), "--name", "x", "--rounds", "1", "--quiet"]
    assert main([*base, "--dp", "local", "--epsilon", "8"]) == 0
    run = tmp_path / "x"
    assert (run / "privacy_epsilon.png").exists()
    assert json.loads((run / "status.json").read_text())["status"] == "finished"
    capsys.readouterr()
    assert main(base) == 2
    assert "already exists" in capsys.readouterr().err
    assert (run / "privacy_epsilon.png").exists()  # the earlier run is untouched
    assert main([*base, "--overwrite"]) == 0
    assert not (run / "privacy_epsilon.png").exists()  # no stale file beside the new report
    assert "No differential privacy" in (run / "privacy_report.md").read_text()
    other = tmp_path / "notarun"
    other.mkdir()
    (other / "thesis.tex").write_text("keep me")
    assert main(["run", "--out", str(tmp_path), "--name", "notarun", "--rounds", "1",
                 "--quiet", "--overwrite"]) == 2
    assert "not a privfl run directory" in capsys.readouterr().err
    assert (other / "thesis.tex").exists()


@pytest.mark.parametrize(("raised", "status", "code"), [
    (KeyboardInterrupt(), "interrupted", 130), (RuntimeError("boom"), "failed", None)])
def test_the_run_directory_records_an_interrupted_or_failed_run(
        raised: BaseException, status: str, code: int | None, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import privfl.experiment as experiment

    def explode(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(experiment, "_train_and_write", explode)
    argv = ["run", "--out", str(tmp_path), "--name", "r", "--rounds", "1", "--quiet"]
    if code is None:
        with pytest.raises(RuntimeError, match="boom"):
            main(argv)
    else:
        assert main(argv) == code
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "interrupted" in err[0]
    recorded = json.loads((tmp_path / "r" / "status.json").read_text())
    assert recorded["status"] == status
    assert code is not None or recorded["reason"] == "RuntimeError: boom"
    assert main(["report", str(tmp_path / "r")]) == 2
    assert f"is {status}" in capsys.readouterr().err


def test_client_level_dp_that_noise_swamps_is_announced_before_the_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README's old one-liner (10 digits clients): one warning line before round 1."""
    rc = main(["run", "--dp", "central", "--epsilon", "4", "--rounds", "2", "--out",
               str(tmp_path), "--name", "swamped", "--quiet"])
    assert rc == 0
    err = capsys.readouterr().err
    (line,) = [ln for ln in err.splitlines() if ln.startswith("privfl: warning:")]
    assert "swamp" in line and "sigma*C/n" in line and "--preset cross-device" in line
    report = json.loads((tmp_path / "swamped" / "privacy_report.json").read_text())
    assert any("swamp" in n for n in report["notes"])


def test_cross_device_preset_sets_defaults_that_explicit_options_override(
        tmp_path: Path) -> None:
    cfg = RunConfig.from_mapping({"preset": "cross-device", "dp": "central", "epsilon": 4.0,
                                  "rounds": 3})
    assert cfg.clients == 2000 and cfg.dataset.value == "synthetic" and cfg.synthetic_iid
    assert cfg.sampling is SamplingName.POISSON and cfg.sample_rate == 0.1
    assert cfg.rounds == 3  # explicit wins
    again = RunConfig.from_toml(_write(tmp_path / "c.toml", cfg.to_toml()))
    assert again == cfg  # config.toml reads back to the same run
    with pytest.raises(ConfigurationError, match="`preset` must be one of"):
        RunConfig.from_mapping({"preset": "huge"})


def test_cross_device_preset_makes_client_level_dp_learn_without_a_warning(
        tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    from privfl.errors import UtilityWarning
    from privfl.experiment import run_experiment

    cfg = RunConfig.from_mapping({"preset": "cross-device", "dp": "adaptive", "epsilon": 4.0,
                                  "rounds": 6, "clients": 600, "sample_rate": 0.3})
    result = run_experiment(cfg, run_dir=tmp_path / "x", plots=False)
    assert not [w for w in recwarn if issubclass(w.category, UtilityWarning)]
    assert result.history.final_accuracy > 0.4  # chance is 0.1 (measured 0.5+)
    assert result.report.units[0].epsilon <= 4.0


def test_adaptive_clipping_default_count_noise_works_for_a_small_cohort(tmp_path: Path) -> None:
    """Seen: `--dp adaptive --epsilon 4` stopped with a tip naming no value; now it runs."""
    from privfl.experiment import run_experiment

    cfg = RunConfig.from_mapping({"dp": "adaptive", "epsilon": 4.0, "rounds": 2,
                                  "hidden": 8})
    with pytest.warns(Warning, match="swamp"):
        result = run_experiment(cfg, run_dir=tmp_path / "a", plots=False)
    assert len(result.history.rounds) == 2
    (mech,) = result.report.units[0].mechanisms
    z = mech["noise_multiplier"]
    assert mech["adaptive_clip_noise_std"] == pytest.approx(1.2 * z)  # max(10/20, 1.2 z)
    assert mech["update_noise_multiplier"] == pytest.approx(1.1 * z, rel=1e-4)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
