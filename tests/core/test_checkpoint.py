"""The checkpoint file format: exact round trips, atomic writes, and refusal of bad files."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import dp_accounting as dpa
import numpy as np
import pytest

from privfl.accounting.accountant import Accountant
from privfl.accounting.events import event_from_json, event_to_json
from privfl.accounting.ledger import Budget, PrivacyLedger, PrivacyUnit, UnitKind
from privfl.core.checkpoint import (
    generator_state,
    load_state,
    restore_generator,
    save_state,
)
from privfl.errors import CheckpointError


def test_tree_round_trip_is_exact(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    tree = {"params": rng.standard_normal(1000).astype(np.float32),
            "counts": np.arange(6, dtype=np.int64).reshape(2, 3), "empty": np.zeros(0),
            "x": 0.1 + 0.2, "nan": math.nan, "inf": -math.inf, "flag": True, "n": 2**70,
            "none": None, "nested": [{"a": "b", "v": np.ones(3, np.float64)}]}
    save_state(tmp_path / "c.ckpt", tree)
    back = load_state(tmp_path / "c.ckpt")
    assert np.array_equal(back["params"], tree["params"]) and back["params"].dtype == np.float32
    assert back["counts"].shape == (2, 3) and back["empty"].shape == (0,)
    assert back["x"] == 0.1 + 0.2 and math.isnan(back["nan"]) and back["inf"] == -math.inf
    assert back["flag"] is True and back["n"] == 2**70 and back["none"] is None
    assert np.array_equal(back["nested"][0]["v"], np.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["c.ckpt"]  # no temporary file left


def test_generator_position_round_trips(tmp_path: Path) -> None:
    g = np.random.default_rng(11)
    g.random(5)
    state = generator_state(g)
    expected = g.random(4)
    save_state(tmp_path / "g.ckpt", {"g": state})
    h = np.random.default_rng(0)
    restore_generator(h, load_state(tmp_path / "g.ckpt")["g"])
    assert np.array_equal(h.random(4), expected)
    with pytest.raises(CheckpointError):
        restore_generator(h, {"bit_generator": "MT19937"})


def _header(path: Path) -> tuple[dict, bytes]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path: Path, header: dict, data: bytes) -> None:
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + data)


@pytest.mark.parametrize("damage", ["truncated", "flipped", "foreign", "huge_header",
                                    "bad_dtype", "short_extent", "object_dtype", "not_json",
                                    "dangling_ref", "version"])
def test_damaged_files_are_refused(tmp_path: Path, damage: str) -> None:
    p = tmp_path / "c.ckpt"
    save_state(p, {"a": np.arange(4, dtype=np.float64), "b": 1})
    header, data = _header(p)
    raw = p.read_bytes()
    if damage == "truncated":
        p.write_bytes(raw[:-5])
    elif damage == "flipped":
        p.write_bytes(raw[:-1] + bytes([raw[-1] ^ 1]))
    elif damage == "foreign":
        p.write_bytes(b"PK\x03\x04 a zip file, not a checkpoint")
    elif damage == "huge_header":
        p.write_bytes(struct.pack("<Q", 2**62) + raw[8:])
    elif damage == "not_json":
        p.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe{]" + data)
    elif damage == "version":
        _write(p, {**header, "version": 99}, data)
    else:
        spec = header["tensors"][0]
        if damage == "bad_dtype":
            spec["dtype"] = "<c16"
        elif damage == "object_dtype":
            spec["dtype"] = "|O"
        elif damage == "short_extent":
            spec["shape"] = [5]
        elif damage == "dangling_ref":
            header["state"]["a"] = {"$tensor": 7}
        _write(p, header, data)
    with pytest.raises(CheckpointError):
        load_state(p)


def test_unsupported_values_are_refused_on_save(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot be checkpointed"):
        save_state(tmp_path / "c.ckpt", {"obj": object()})
    with pytest.raises(CheckpointError, match="dtype"):
        save_state(tmp_path / "c.ckpt", {"s": np.array(["a"], dtype=object)})
    with pytest.raises(CheckpointError):
        save_state(tmp_path / "missing" / "c.ckpt", {"a": 1})


def test_dp_events_round_trip_and_unknown_types_are_refused() -> None:
    events = [dpa.PoissonSampledDpEvent(0.0123, dpa.GaussianDpEvent(1.2345678901234567)),
              dpa.SelfComposedDpEvent(dpa.ZCDpEvent(0.25), 7),
              dpa.SampledWithoutReplacementDpEvent(100, 10, dpa.GaussianDpEvent(0.9)),
              dpa.NonPrivateDpEvent()]
    for e in events:
        back = event_from_json(json.loads(json.dumps(event_to_json(e))))
        assert back == e and hash(back) == hash(e)
    for bad in ({"type": "os.system"}, {"type": "GaussianDpEvent"},
                {"type": "GaussianDpEvent", "noise_multiplier": "1"}, [1], {"type": None}):
        with pytest.raises(CheckpointError):
            event_from_json(bad)


def test_ledger_state_round_trip_keeps_epsilon_and_budget() -> None:
    ledger = PrivacyLedger(delta=1e-5, accountant=Accountant.RDP,
                           budgets={UnitKind.EXAMPLE: Budget(3.0, 1e-5)})
    ev = dpa.SelfComposedDpEvent(dpa.PoissonSampledDpEvent(0.05, dpa.GaussianDpEvent(1.1)), 20)
    for r in (1, 2, 4):
        ledger.record(PrivacyUnit.example(2), ev, round_id=r, mechanism="DP-SGD",
                      params={"steps": 20})
    back = PrivacyLedger(delta=1e-5, accountant=Accountant.RDP,
                         budgets={UnitKind.EXAMPLE: Budget(3.0, 1e-5)})
    back.load_state_dict(json.loads(json.dumps(ledger.state_dict())))
    unit = PrivacyUnit.example(2)
    assert back.epsilon(unit) == ledger.epsilon(unit)
    assert back.rounds(unit) == [1, 2, 4]
    other = PrivacyLedger(delta=1e-6, accountant=Accountant.RDP)
    with pytest.raises(CheckpointError, match="delta"):
        other.load_state_dict(ledger.state_dict())
