"""The privfl wire format: typed, versioned, length-checked messages (never pickle).

Every message that crosses a trust boundary is ``bytes`` in this layout (little-endian)::

    header  magic b"PVFL" | version u8 | kind u16 | round_id u32 | n_fields u16 | body_len u32
    field   tag u8 | type u8 | length u32 | payload            (n_fields times, tags ascending)

Payloads by type:

* ``UINT``: u64; ``FLOAT``: f64 (finite); ``BYTES``: raw; ``TEXT``: UTF-8;
* ``ARRAY``: dtype code u8 | ndim u8 | ndim × u32 shape | raw little-endian data.

A receiver decodes against the :class:`Schema` it expects at its current stage, so a message of
another kind, a missing, unknown, duplicated or mistyped field, a length that does not add up,
trailing bytes, a NaN/Inf float or an oversized message all raise
:class:`~privfl.errors.MalformedMessageError` before any state is touched.

Threat model: the decoder treats its input as adversarial. It allocates nothing larger than the
declared, already bounds-checked message, and never executes or unpickles anything.
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from privfl.errors import ConfigurationError, MalformedMessageError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "WIRE_VERSION",
    "DecodedMessage",
    "Field",
    "FieldType",
    "Schema",
    "decode",
    "encode",
    "pack_blobs",
    "peek_kind",
    "unpack_blobs",
]

WIRE_VERSION = 1
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30  # 1 GiB
_MAGIC = b"PVFL"
_HEADER = struct.Struct("<4sBHIHI")
_FIELD = struct.Struct("<BBI")
_MAX_NDIM = 4

_DTYPE_CODES: dict[int, np.dtype[np.generic]] = {
    1: np.dtype("<f4"),
    2: np.dtype("<f8"),
    3: np.dtype("<u4"),
    4: np.dtype("<u8"),
    5: np.dtype("<i8"),
    6: np.dtype("u1"),
}
_CODE_OF = {dt: code for code, dt in _DTYPE_CODES.items()}


class FieldType(enum.IntEnum):
    """The type of one message field."""

    UINT = 1
    FLOAT = 2
    BYTES = 3
    TEXT = 4
    ARRAY = 5


FieldValue = int | float | bytes | str | npt.NDArray[np.generic]


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a schema.

    Attributes:
        tag: Field number on the wire, 1..255, unique within the schema.
        name: Python-side name.
        type: The wire type.
        dtype: For ``ARRAY`` fields, the only accepted element dtype.
        ndim: For ``ARRAY`` fields, the required number of dimensions.
        optional: Whether the field may be absent.
        max_uint: For ``UINT`` fields, the largest accepted value.
    """

    tag: int
    name: str
    type: FieldType
    dtype: str | None = None
    ndim: int = 1
    optional: bool = False
    max_uint: int = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Schema:
    """A message kind: its numeric id, a name for error messages, and its fields."""

    kind: int
    name: str
    fields: tuple[Field, ...]
    _by_tag: dict[int, Field] = field(init=False, repr=False, compare=False)
    _by_name: dict[str, Field] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.kind < 1 << 16:
            raise ConfigurationError(f"`kind` must be in [1, 65535]. Found {self.kind!r}.")
        by_tag: dict[int, Field] = {}
        by_name: dict[str, Field] = {}
        for f in self.fields:
            if not 0 < f.tag < 256 or f.tag in by_tag or f.name in by_name:
                raise ConfigurationError(f"Schema {self.name}: bad or duplicate field {f!r}.")
            if f.type is FieldType.ARRAY and np.dtype(f.dtype or "") not in _CODE_OF:
                raise ConfigurationError(f"Schema {self.name}: unsupported dtype in {f!r}.")
            by_tag[f.tag] = f
            by_name[f.name] = f
        object.__setattr__(self, "_by_tag", by_tag)
        object.__setattr__(self, "_by_name", by_name)


@dataclass(frozen=True, slots=True)
class DecodedMessage:
    """A validated message: its schema, round and field values."""

    schema: Schema
    round_id: int
    values: Mapping[str, FieldValue]

    def uint(self, name: str) -> int:
        """Return a ``UINT`` field."""
        v = self.values[name]
        if not isinstance(v, int):  # pragma: no cover - guaranteed by decode
            raise MalformedMessageError(f"field {name} is not an integer")
        return v

    def real(self, name: str) -> float:
        """Return a ``FLOAT`` field."""
        v = self.values[name]
        if not isinstance(v, float):  # pragma: no cover - guaranteed by decode
            raise MalformedMessageError(f"field {name} is not a float")
        return v

    def raw(self, name: str) -> bytes:
        """Return a ``BYTES`` field."""
        v = self.values[name]
        if not isinstance(v, bytes):  # pragma: no cover - guaranteed by decode
            raise MalformedMessageError(f"field {name} is not bytes")
        return v

    def array(self, name: str) -> npt.NDArray[np.generic]:
        """Return an ``ARRAY`` field (read-only view on the message bytes)."""
        v = self.values[name]
        if not isinstance(v, np.ndarray):  # pragma: no cover - guaranteed by decode
            raise MalformedMessageError(f"field {name} is not an array")
        return v


def _encode_payload(f: Field, value: object) -> bytes | tuple[bytes, memoryview]:
    if f.type is FieldType.UINT:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ConfigurationError(f"field `{f.name}` needs an int. Found {value!r}.")
        v = int(value)
        if not 0 <= v <= f.max_uint:
            raise ConfigurationError(f"field `{f.name}` must be in [0, {f.max_uint}]. Found {v}.")
        return struct.pack("<Q", v)
    if f.type is FieldType.FLOAT:
        x = float(value)  # type: ignore[arg-type]
        if not math.isfinite(x):
            raise ConfigurationError(f"field `{f.name}` must be finite. Found {x!r}.")
        return struct.pack("<d", x)
    if f.type is FieldType.BYTES:
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ConfigurationError(f"field `{f.name}` needs bytes. Found {type(value)}.")
        return bytes(value)
    if f.type is FieldType.TEXT:
        if not isinstance(value, str):
            raise ConfigurationError(f"field `{f.name}` needs str. Found {type(value)}.")
        return value.encode("utf-8")
    arr = np.asarray(value)
    want = np.dtype(f.dtype or "")
    if arr.dtype.newbyteorder("<") != want and arr.dtype != want:
        raise ConfigurationError(f"field `{f.name}` needs dtype {want}. Found {arr.dtype}.")
    if arr.ndim != f.ndim:
        raise ConfigurationError(f"field `{f.name}` needs {f.ndim} dims. Found {arr.ndim}.")
    if want.kind == "f" and not np.isfinite(arr).all():
        raise ConfigurationError(f"field `{f.name}` must be finite.")
    head = struct.pack("<BB", _CODE_OF[want], arr.ndim) + struct.pack(f"<{arr.ndim}I", *arr.shape)
    data = np.ascontiguousarray(arr, dtype=want)
    return head, data.reshape(-1).view(np.uint8).data  # copied once, by encode's join


def encode(schema: Schema, round_id: int, values: Mapping[str, object]) -> bytes:
    """Encode ``values`` as a message of ``schema`` for ``round_id``.

    Raises:
        ConfigurationError: A value is missing, unknown, of the wrong type or not finite.
    """
    if not 0 <= round_id < 1 << 32:
        raise ConfigurationError(f"`round_id` must be in [0, 2**32). Found {round_id!r}.")
    unknown = set(values) - set(schema._by_name)
    if unknown:
        raise ConfigurationError(f"{schema.name}: unknown fields {sorted(unknown)}.")
    parts: list[bytes | memoryview] = []
    fields = 0
    for f in schema.fields:
        if f.name not in values:
            if f.optional:
                continue
            raise ConfigurationError(f"{schema.name}: missing field `{f.name}`.")
        payload = _encode_payload(f, values[f.name])
        pieces = payload if isinstance(payload, tuple) else (payload,)
        parts.append(_FIELD.pack(f.tag, int(f.type), sum(len(p) for p in pieces)))
        parts.extend(pieces)
        fields += 1
    header = _HEADER.pack(_MAGIC, WIRE_VERSION, schema.kind, round_id, fields,
                          sum(len(p) for p in parts))
    return b"".join([header, *parts])  # one copy of every payload


def _bad(schema: Schema, why: str) -> MalformedMessageError:
    return MalformedMessageError(f"malformed {schema.name} message: {why}")


def _decode_payload(schema: Schema, f: Field, buf: memoryview) -> FieldValue:
    n = len(buf)
    if f.type is FieldType.UINT:
        if n != 8:
            raise _bad(schema, f"field {f.name}: uint needs 8 bytes, got {n}")
        v = int(struct.unpack("<Q", buf)[0])
        if v > f.max_uint:
            raise _bad(schema, f"field {f.name}: {v} exceeds {f.max_uint}")
        return v
    if f.type is FieldType.FLOAT:
        if n != 8:
            raise _bad(schema, f"field {f.name}: float needs 8 bytes, got {n}")
        x = float(struct.unpack("<d", buf)[0])
        if not math.isfinite(x):
            raise _bad(schema, f"field {f.name}: non-finite float {x!r}")
        return x
    if f.type is FieldType.BYTES:
        return bytes(buf)
    if f.type is FieldType.TEXT:
        try:
            return bytes(buf).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _bad(schema, f"field {f.name}: invalid UTF-8") from exc
    if n < 2:
        raise _bad(schema, f"field {f.name}: truncated array header")
    code, ndim = buf[0], buf[1]
    want = np.dtype(f.dtype or "")
    if _DTYPE_CODES.get(code) != want:
        raise _bad(schema, f"field {f.name}: dtype code {code}, expected {want}")
    if ndim != f.ndim or ndim > _MAX_NDIM:
        raise _bad(schema, f"field {f.name}: {ndim} dims, expected {f.ndim}")
    off = 2 + 4 * ndim
    if n < off:
        raise _bad(schema, f"field {f.name}: truncated array shape")
    shape = struct.unpack(f"<{ndim}I", buf[2:off])
    count = math.prod(shape)
    if (n - off) != count * want.itemsize:
        raise _bad(schema, f"field {f.name}: {n - off} data bytes for shape {shape} of {want}")
    arr = np.frombuffer(buf[off:], dtype=want).reshape(shape)
    if want.kind == "f" and not np.isfinite(arr).all():
        raise _bad(schema, f"field {f.name}: array contains NaN or Inf")
    return arr


_COUNT = struct.Struct("<I")


def pack_blobs(blobs: list[bytes]) -> bytes:
    """A list of byte strings as one ``BYTES`` payload: count u32, lengths u32…, the bytes."""
    head = _COUNT.pack(len(blobs)) + b"".join(_COUNT.pack(len(b)) for b in blobs)
    return head + b"".join(blobs)


def unpack_blobs(data: bytes, *, max_items: int = 256) -> list[bytes]:
    """Inverse of :func:`pack_blobs`, for untrusted input.

    Raises:
        MalformedMessageError: Truncated, too many items, or lengths that do not add up.
    """
    mv = memoryview(data)
    if len(mv) < _COUNT.size:
        raise MalformedMessageError("blob list shorter than its count")
    (count,) = _COUNT.unpack_from(mv)
    if count > max_items:
        raise MalformedMessageError(f"blob list of {count} items exceeds {max_items}")
    pos = _COUNT.size * (1 + count)
    if len(mv) < pos:
        raise MalformedMessageError("blob list truncated in its lengths")
    lengths = [_COUNT.unpack_from(mv, _COUNT.size * (1 + i))[0] for i in range(count)]
    if pos + sum(lengths) != len(mv):
        raise MalformedMessageError("blob list lengths do not add up")
    out = []
    for n in lengths:
        out.append(bytes(mv[pos : pos + n]))
        pos += n
    return out


def peek_kind(data: bytes) -> int:
    """The message kind in ``data``'s header (to dispatch before a full :func:`decode`).

    Raises:
        MalformedMessageError: ``data`` has no valid header.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < _HEADER.size:
        raise MalformedMessageError("message too short for a privfl header")
    magic, version, kind, *_ = _HEADER.unpack(bytes(data[: _HEADER.size]))
    if magic != _MAGIC or version != WIRE_VERSION:
        raise MalformedMessageError("not a privfl message of this wire version")
    return int(kind)


def decode(data: bytes, schema: Schema, *,
           max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> DecodedMessage:
    """Decode and validate ``data`` as a message of ``schema``.

    Args:
        data: The received bytes (untrusted).
        schema: The message kind the receiver expects now.
        max_bytes: Largest accepted message.

    Returns:
        The validated message. Arrays are read-only views into ``data``.

    Raises:
        MalformedMessageError: For any deviation from the format or the schema.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedMessageError(f"a message must be bytes. Found {type(data).__name__}.")
    mv = memoryview(bytes(data) if not isinstance(data, bytes) else data)
    if len(mv) > max_bytes:
        raise _bad(schema, f"{len(mv)} bytes exceeds the maximum of {max_bytes}")
    if len(mv) < _HEADER.size:
        raise _bad(schema, f"{len(mv)} bytes is shorter than the {_HEADER.size}-byte header")
    magic, version, kind, round_id, n_fields, body_len = _HEADER.unpack(mv[: _HEADER.size])
    if magic != _MAGIC:
        raise _bad(schema, "bad magic (not a privfl message)")
    if version != WIRE_VERSION:
        raise _bad(schema, f"wire version {version}, expected {WIRE_VERSION}")
    if kind != schema.kind:
        raise _bad(schema, f"message kind {kind}, expected {schema.kind}")
    if body_len != len(mv) - _HEADER.size:
        raise _bad(schema, f"body length {body_len} but {len(mv) - _HEADER.size} bytes follow")
    values: dict[str, FieldValue] = {}
    pos = _HEADER.size
    last_tag = 0
    for _ in range(n_fields):
        if pos + _FIELD.size > len(mv):
            raise _bad(schema, "truncated field header")
        tag, ftype, length = _FIELD.unpack(mv[pos : pos + _FIELD.size])
        pos += _FIELD.size
        if tag <= last_tag:
            raise _bad(schema, f"field tag {tag} out of order or duplicated")
        last_tag = tag
        f = schema._by_tag.get(tag)
        if f is None:
            raise _bad(schema, f"unknown field tag {tag}")
        if ftype != int(f.type):
            raise _bad(schema, f"field {f.name}: wire type {ftype}, expected {int(f.type)}")
        if pos + length > len(mv):
            raise _bad(schema, f"field {f.name}: length {length} runs past the end")
        values[f.name] = _decode_payload(schema, f, mv[pos : pos + length])
        pos += length
    if pos != len(mv):
        raise _bad(schema, f"{len(mv) - pos} trailing bytes")
    missing = [f.name for f in schema.fields if not f.optional and f.name not in values]
    if missing:
        raise _bad(schema, f"missing fields {missing}")
    return DecodedMessage(schema=schema, round_id=round_id, values=values)
