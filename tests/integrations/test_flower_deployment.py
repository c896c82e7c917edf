"""The example Flower app in a real local deployment: one SuperLink and three SuperNodes on
127.0.0.1 (insecure mode), run with Flower's own ``flwr run``; the final model equals privfl's
simulator on the same seed, bit for bit. Slow (each exchange costs Flower ~8-10 s)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flwr")

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "flower"
NODES, ROUNDS = 3, 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bin(name: str) -> str:
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else (shutil.which(name) or name)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[dict[str, str]]:
    port = _free_port()
    home = tmp_path / "flwr-home"
    home.mkdir()
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "deploy"\n\n[superlink.deploy]\n'
        f'address = "127.0.0.1:{port}"\ninsecure = true\n')
    env = {**os.environ, "FLWR_HOME": str(home),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    procs = [subprocess.Popen(
        [_bin("flower-superlink"), "--insecure", "--disable-runtime-dependency-installation",
         "--host", "127.0.0.1", "--port", str(port)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)]
    time.sleep(3)
    for i in range(NODES):
        procs.append(subprocess.Popen(
            [_bin("flower-supernode"), "--insecure", "--superlink", f"127.0.0.1:{port}",
             "--port", str(_free_port()),
             "--node-config", f"partition-id={i} num-partitions={NODES}"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True))
    try:
        yield env
    finally:
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)


def test_example_app_on_a_local_superlink_equals_the_simulator(deployment: dict[str, str],
                                                               tmp_path: Path) -> None:
    out = tmp_path / "result"
    config = (f"num-partitions={NODES} num-server-rounds={ROUNDS} secure-randomness=false "
              f"result-path='{out}'")
    run = subprocess.run([_bin("flwr"), "run", str(EXAMPLE), "deploy", "--run-config", config,
                          "--stream"], env=deployment, capture_output=True, text=True,
                         timeout=900, check=False)
    assert (out / "params.npy").exists(), run.stdout[-3000:] + run.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert len(history["rounds"]) == ROUNDS

    sys.path.insert(0, str(EXAMPLE))
    try:
        from privfl_app import task
    finally:
        sys.path.remove(str(EXAMPLE))
    from privfl.core.bounds import CoordinateClip
    from privfl.core.fedavg import FedAvg, FedAvgConfig
    from privfl.core.sampling import FixedSizeSampling
    from privfl.core.weighting import Weighting
    from privfl.secagg import PairwiseSecureSum

    s = task.settings({"num-partitions": NODES, "num-server-rounds": ROUNDS,
                       "secure-randomness": "false"})
    plan = task.plan(s)
    fa = FedAvg(model=task.model(s), data=task.data(s), client_update=plan.client_update,
                config=FedAvgConfig(rounds=ROUNDS, sampler=FixedSizeSampling(NODES), seed=0,
                                    weighting=Weighting.UNIFORM),
                secure_sum=PairwiseSecureSum(sparse=True, rounding_seed=0),
                stages=CoordinateClip(s["bound"]))
    fa.run()
    np.testing.assert_array_equal(np.load(out / "params.npy"), fa.params)
    report = json.loads((out / "privacy_report.json").read_text())
    assert len(report["units"]) == NODES  # one example-level ledger per client, never summed
    assert max(u["epsilon"] for u in report["units"]) <= s["epsilon"]
