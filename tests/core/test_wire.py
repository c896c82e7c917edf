from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privfl.core import wire
from privfl.core.securesum import _INPUT32, _INPUT64, _REQUEST
from privfl.errors import ConfigurationError, MalformedMessageError

SCHEMA = wire.Schema(kind=99, name="test.msg", fields=(
    wire.Field(1, "n", wire.FieldType.UINT, max_uint=1000),
    wire.Field(2, "x", wire.FieldType.FLOAT),
    wire.Field(3, "blob", wire.FieldType.BYTES),
    wire.Field(4, "label", wire.FieldType.TEXT, optional=True),
    wire.Field(5, "vec", wire.FieldType.ARRAY, dtype="<f4"),
    wire.Field(6, "mat", wire.FieldType.ARRAY, dtype="<u4", ndim=2),
))
ALL_SCHEMAS = [SCHEMA, _REQUEST, _INPUT32, _INPUT64]


def _valid() -> bytes:
    return wire.encode(SCHEMA, 7, {
        "n": 5, "x": -1.5, "blob": b"\x00\x01", "label": "hé",
        "vec": np.arange(4, dtype=np.float32), "mat": np.ones((2, 3), dtype=np.uint32)})


def _valid_messages() -> list[tuple[wire.Schema, bytes]]:
    return [
        (SCHEMA, _valid()),
        (_REQUEST, wire.encode(_REQUEST, 3, {"length": 10})),
        (_INPUT32, wire.encode(_INPUT32, 3, {"weight": 0.5, "value": np.ones(5, np.float32)})),
        (_INPUT64, wire.encode(_INPUT64, 1, {"weight": 1.0, "value": np.ones(3)})),
    ]


def test_roundtrip() -> None:
    msg = wire.decode(_valid(), SCHEMA)
    assert msg.round_id == 7
    assert msg.uint("n") == 5 and msg.real("x") == -1.5 and msg.raw("blob") == b"\x00\x01"
    assert msg.values["label"] == "hé"
    np.testing.assert_array_equal(msg.array("vec"), np.arange(4, dtype=np.float32))
    assert msg.array("mat").shape == (2, 3)


def test_optional_field_may_be_absent() -> None:
    data = wire.encode(SCHEMA, 0, {"n": 1, "x": 0.0, "blob": b"", "vec": np.zeros(0, np.float32),
                                   "mat": np.zeros((0, 2), np.uint32)})
    assert "label" not in wire.decode(data, SCHEMA).values


@pytest.mark.parametrize(("mutate", "reason"), [
    (lambda b: b[:-1], "trailing|runs past|body length"),
    (lambda b: b + b"\x00", "body length"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:4] + b"\x02" + b[5:], "version"),
    (lambda b: b[:5] + b"\x01\x00" + b[7:], "kind"),
    (lambda b: b[:10], "shorter"),
])
def test_structural_errors(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(MalformedMessageError, match=reason):
        wire.decode(mutate(_valid()), SCHEMA)


def test_nan_in_array_rejected() -> None:
    good = wire.encode(_INPUT32, 0, {"weight": 1.0, "value": np.ones(3, np.float32)})
    bad = good[:-4] + np.float32(np.nan).tobytes()
    with pytest.raises(MalformedMessageError, match="NaN"):
        wire.decode(bad, _INPUT32)


def test_max_bytes_enforced() -> None:
    with pytest.raises(MalformedMessageError, match="exceeds the maximum"):
        wire.decode(_valid(), SCHEMA, max_bytes=20)


def test_encode_validates() -> None:
    with pytest.raises(ConfigurationError, match="missing"):
        wire.encode(SCHEMA, 0, {"n": 1})
    with pytest.raises(ConfigurationError, match="finite"):
        wire.encode(_INPUT32, 0, {"weight": float("nan"), "value": np.ones(1, np.float32)})
    with pytest.raises(ConfigurationError, match="dtype"):
        wire.encode(_INPUT32, 0, {"weight": 1.0, "value": np.ones(1, np.float64)})
    with pytest.raises(ConfigurationError, match="1000"):
        wire.encode(SCHEMA, 0, {"n": 1001, "x": 0.0, "blob": b"", "vec": np.zeros(1, np.float32),
                                "mat": np.zeros((1, 1), np.uint32)})


def test_non_bytes_rejected() -> None:
    with pytest.raises(MalformedMessageError):
        wire.decode("not bytes", SCHEMA)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200), which=st.integers(0, len(ALL_SCHEMAS) - 1))
def test_fuzz_random_bytes_only_malformed(data: bytes, which: int) -> None:
    with contextlib.suppress(MalformedMessageError):
        wire.decode(data, ALL_SCHEMAS[which])


@settings(max_examples=500, deadline=None)
@given(which=st.integers(0, 3), pos=st.integers(0, 10_000), byte=st.integers(0, 255),
       cut=st.integers(0, 10_000), op=st.sampled_from(["flip", "cut", "insert", "dup"]))
def test_fuzz_mutated_valid_messages_only_malformed(which: int, pos: int, byte: int, cut: int,
                                                    op: str) -> None:
    schema, good = _valid_messages()[which]
    b = bytearray(good)
    i = pos % len(b)
    if op == "flip":
        b[i] = byte
    elif op == "cut":
        b = b[: cut % len(b)]
    elif op == "insert":
        b[i:i] = bytes([byte])
    else:
        b = b + b[i:]
    try:
        msg = wire.decode(bytes(b), schema)
    except MalformedMessageError:
        return
    # A mutation may still be a valid message; then it must satisfy the schema fully.
    for f in schema.fields:
        assert f.optional or f.name in msg.values
        if f.type is wire.FieldType.ARRAY:
            arr = msg.array(f.name)
            assert arr.dtype == np.dtype(f.dtype) and arr.ndim == f.ndim
            if arr.dtype.kind == "f":
                assert np.isfinite(arr).all()
