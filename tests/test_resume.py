"""Checkpoints, Ctrl-C and ``privfl run --resume`` (issue 12, item 1).

A run interrupted at a random round and resumed must end bit-identical (CPU, seeded) to one
that never stopped, with the same ε; an abandoned round's privacy charges are never forgotten.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from privfl.cli import main
from privfl.core.checkpoint import load_state
from privfl.errors import CheckpointError, ConfigurationError
from privfl.experiment import RunConfig, run_experiment
from privfl.resume import CHECKPOINT, RunInterrupted

pytestmark = pytest.mark.filterwarnings("ignore::privfl.errors.UtilityWarning")

_RNG = np.random.default_rng()  # the interrupted round is random; each test names it

CASES: dict[str, dict[str, Any]] = {
    "local-dpsgd-secagg": dict(dp="local", epsilon=8.0, secure="secagg", local_steps=3),
    "central-poisson-fedadam-dropout": dict(
        dp="central", epsilon=4.0, sampling="poisson", sample_rate=0.6, server_opt="fedadam",
        dropout_rate=0.2, local_steps=2),
    "adaptive-clipping": dict(dp="adaptive", epsilon=4.0, clients=12, local_steps=2),
    "distributed-secagg+": dict(dp="distributed", epsilon=8.0, secure="secagg+", clients=8,
                                local_steps=2),
    "audit-canary-clients": dict(dp="central", epsilon=4.0, audit=True, canaries=8,
                                 holdout_clients=4, local_steps=2),
}


def _cfg(**kw: Any) -> RunConfig:
    base = dict(rounds=5, clients=6, hidden=16, secure_randomness=False)
    return RunConfig.from_mapping({**base, **kw})


def _epsilons(result: Any) -> list[tuple[str, float]]:
    return [(u.unit, u.epsilon) for u in result.report.units]


def _interrupt_at(k: int, presses: int = 1) -> Any:
    def on_round(rec: Any) -> None:
        if rec.round_id == k:
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)
    return on_round


@pytest.mark.parametrize("case", list(CASES))
def test_interrupt_at_a_random_round_then_resume_is_bit_identical(case: str,
                                                                  tmp_path: Path) -> None:
    cfg = _cfg(**CASES[case])
    k = int(_RNG.integers(1, cfg.rounds))  # 1 .. rounds-1
    whole = run_experiment(cfg, run_dir=tmp_path / "whole", plots=False)

    with pytest.raises(RunInterrupted) as info:
        run_experiment(cfg, run_dir=tmp_path / "cut", plots=False, on_round=_interrupt_at(k))
    assert info.value.rounds_done == k and info.value.resumable, f"interrupted at round {k}"
    cut = tmp_path / "cut"
    status = json.loads((cut / "status.json").read_text())
    assert status["status"] == "interrupted" and "privfl run --resume" in status["reason"]
    # what was done is written: the history and the privacy report so far
    assert len(json.loads((cut / "history.json").read_text())["rounds"]) == k
    assert (cut / "privacy_report.json").is_file()
    assert load_state(cut / CHECKPOINT)["rounds_done"] == k

    resumed = run_experiment(cfg, run_dir=cut, plots=False, resume=True)
    assert np.array_equal(resumed.params, whole.params), f"{case}: interrupted at round {k}"
    assert _epsilons(resumed) == _epsilons(whole), f"{case}: interrupted at round {k}"
    assert [r.test_accuracy for r in resumed.history.rounds] == \
        [r.test_accuracy for r in whole.history.rounds]
    assert json.loads((cut / "status.json").read_text())["status"] == "finished"
    if cfg.audit:
        assert [a.value for a in resumed.audit.findings] == \
            [a.value for a in whole.audit.findings]


def test_interrupt_before_the_first_round_completes_resumes_from_round_zero(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(rounds=3)
    whole = run_experiment(cfg, run_dir=tmp_path / "whole", plots=False)
    from privfl.core.fedavg import FedAvg

    real = FedAvg.run_round

    def abandon_first(self: FedAvg, round_id: int, selected: list[int]) -> Any:
        if round_id == 1:
            raise KeyboardInterrupt
        return real(self, round_id, selected)

    monkeypatch.setattr(FedAvg, "run_round", abandon_first)
    with pytest.raises(RunInterrupted) as info:
        run_experiment(cfg, run_dir=tmp_path / "cut", plots=False)
    assert info.value.rounds_done == 0 and info.value.resumable
    monkeypatch.setattr(FedAvg, "run_round", real)
    resumed = run_experiment(cfg, run_dir=tmp_path / "cut", plots=False, resume=True)
    assert np.array_equal(resumed.params, whole.params)


def test_an_abandoned_round_keeps_the_privacy_its_clients_spent(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C twice mid-round: clients that trained keep their charge; resuming reruns it."""
    cfg = _cfg(dp="local", noise_multiplier=1.0, local_steps=2, rounds=4)
    whole = run_experiment(cfg, run_dir=tmp_path / "whole", plots=False)
    k = int(_RNG.integers(1, cfg.rounds + 1))
    from privfl.core.roles import ClientRole

    real = ClientRole._contribute
    trained: list[int] = []

    def interrupted_after_two(self: ClientRole, rnd: Any, *args: Any) -> Any:
        out = real(self, rnd, *args)  # trains and charges the client's own ledger
        if rnd.round_id == k:
            trained.append(self.client_id)
            if len(trained) == 2:
                raise KeyboardInterrupt
        return out

    monkeypatch.setattr(ClientRole, "_contribute", interrupted_after_two)
    with pytest.raises(RunInterrupted) as info:
        run_experiment(cfg, run_dir=tmp_path / "cut", plots=False)
    assert info.value.rounds_done == k - 1 and info.value.resumable, f"abandoned round {k}"
    saved = load_state(tmp_path / "cut" / CHECKPOINT)
    assert saved["abandoned"] == {"round": k, "resumable": True}
    for cid in trained:  # their charge for the abandoned round is in the checkpoint
        entries = saved["run"]["clients"][str(cid)]["ledger"]["units"][0]["entries"]
        assert [e["round_id"] for e in entries][-1] == k
    monkeypatch.setattr(ClientRole, "_contribute", real)
    resumed = run_experiment(cfg, run_dir=tmp_path / "cut", plots=False, resume=True)
    before = dict(_epsilons(whole))
    after = dict(_epsilons(resumed))
    assert set(before) == set(after)
    assert all(after[u] >= before[u] for u in before)  # never less than the plain run
    # the resumed report speaks of the abandoned round
    assert any("abandoned" in n for n in resumed.report.notes)


def test_resume_with_the_csprng_carries_the_spent_epsilon(tmp_path: Path) -> None:
    """Unseeded: not replayable, but the ledger carries ε; it ends where the plan says."""
    cfg = _cfg(dp="local", epsilon=6.0, local_steps=2, rounds=4, secure_randomness=True)
    with pytest.raises(RunInterrupted):
        run_experiment(cfg, run_dir=tmp_path / "cut", plots=False, on_round=_interrupt_at(2))
    mid = json.loads((tmp_path / "cut" / "privacy_report.json").read_text())
    eps_mid = max(u["epsilon"] for u in mid["units"])
    resumed = run_experiment(cfg, run_dir=tmp_path / "cut", plots=False, resume=True)
    eps_end = max(e for _, e in _epsilons(resumed))
    assert 0 < eps_mid < eps_end <= 6.0
    assert len(resumed.history.rounds) == 4 and resumed.history.stopped_early is None


def test_resume_refuses_what_it_cannot_continue(tmp_path: Path) -> None:
    cfg = _cfg(rounds=2)
    run_experiment(cfg, run_dir=tmp_path / "done", plots=False)
    with pytest.raises(ConfigurationError, match="has finished"):
        run_experiment(cfg, run_dir=tmp_path / "done", plots=False, resume=True)

    with pytest.raises(RunInterrupted):
        run_experiment(cfg, run_dir=tmp_path / "cut", plots=False, on_round=_interrupt_at(1))
    other = _cfg(rounds=2, lr=0.1)
    with pytest.raises(ConfigurationError, match="cannot change"):
        run_experiment(other, run_dir=tmp_path / "cut", plots=False, resume=True)
    # a config.toml edited after the fact: the checkpoint belongs to the original one
    original = (tmp_path / "cut" / "config.toml").read_text()
    (tmp_path / "cut" / "config.toml").write_text(other.to_toml())
    with pytest.raises(CheckpointError, match="another configuration"):
        run_experiment(other, run_dir=tmp_path / "cut", plots=False, resume=True)
    (tmp_path / "cut" / "config.toml").write_text(original)
    ckpt = tmp_path / "cut" / CHECKPOINT
    raw = bytearray(ckpt.read_bytes())
    raw[-3] ^= 0xFF
    ckpt.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="corrupted"):
        run_experiment(cfg, run_dir=tmp_path / "cut", plots=False, resume=True)
    ckpt.unlink()
    with pytest.raises(ConfigurationError, match="no checkpoint"):
        run_experiment(cfg, run_dir=tmp_path / "cut", plots=False, resume=True)


def test_cli_resume_takes_only_threads(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                       ) -> None:
    assert main(["run", "--resume", str(tmp_path / "nope"), "--quiet"]) == 2
    assert "is not a privfl run directory" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "--rounds", "3"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--rounds" in err and "takes only --threads" in err


def test_real_ctrl_c_then_resume_from_the_command_line(tmp_path: Path) -> None:
    """SIGINT to a real ``privfl run``: exit 130, one line saying how to resume; resume."""
    flags = ["--rounds", "12", "--clients", "6", "--hidden", "16", "--local-steps", "3",
             "--dp", "local", "--epsilon", "8", "--secure", "secagg",
             "--no-secure-randomness", "--out", str(tmp_path), "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "privfl", "run", *flags, "--name", "cut"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    ckpt = tmp_path / "cut" / CHECKPOINT
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if load_state(ckpt)["rounds_done"] >= 2:
                break
        except (CheckpointError, OSError, KeyError):
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert "Traceback" not in err and len(lines) <= 2, err
    assert f"resume with: privfl run --resume {tmp_path / 'cut'}" in lines[-1]
    done = load_state(ckpt)["rounds_done"]
    assert 2 <= done < 12

    rc = subprocess.run([sys.executable, "-m", "privfl", "run", "--resume",
                         str(tmp_path / "cut"), "--quiet"], capture_output=True, text=True,
                        timeout=300, env=env)
    assert rc.returncode == 0, rc.stderr
    assert "after 12 rounds" in rc.stdout
    cfg = RunConfig.from_toml(tmp_path / "cut" / "config.toml")
    whole = run_experiment(cfg, run_dir=tmp_path / "whole", plots=False)
    final = load_state(ckpt)
    assert np.array_equal(final["run"]["server"]["params"], whole.params), f"cut at {done}"
    report = json.loads((tmp_path / "cut" / "privacy_report.json").read_text())
    assert [u["epsilon"] for u in report["units"]] == [e for _, e in _epsilons(whole)]


def test_a_checkpoint_holds_no_secret_key(tmp_path: Path) -> None:
    """Attack the file: the CKKS secret key must not be recoverable from a checkpoint."""
    from privfl import resume as durable
    from privfl.experiment import build_run

    cfg = _cfg(rounds=1, secure="ckks", dp="local", epsilon=8.0, local_steps=2)
    driver, _ = build_run(cfg)
    history = driver.run()
    tree = durable.capture(driver, history, None, "digest")
    durable.write(tmp_path, tree)
    raw = (tmp_path / CHECKPOINT).read_bytes()
    secret = driver.secure_sum.client_secrets().export_secret(
        i_understand_this_reveals_the_key=True)
    assert len(secret) >= 32  # COMPACT exports the seed its per-round keys derive from
    windows = [secret[i:i + 16] for i in range(len(secret) - 16)]
    assert not any(w in raw for w in windows)
    # nor any field named like a key
    names: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            names.update(node)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(load_state(tmp_path / CHECKPOINT))
    assert not [n for n in names if any(w in n.lower() for w in ("secret", "private", "sk"))]
