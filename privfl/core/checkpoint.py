"""Checkpoints: a run's state between rounds, on disk, atomically and without pickle.

A checkpoint is a *state tree*: nested dicts (string keys) and lists of JSON scalars (``None``,
bools, ints, finite floats, strings) and numpy arrays. :func:`save_state` writes it as one file
in a safetensors-like layout:

====================  ==================================================================
8 bytes               little-endian u64 ``N``, the header length (≤ 64 MiB)
``N`` bytes           UTF-8 JSON header: ``format``, ``version``, ``sha256`` of the data, the
                      tree (arrays replaced by ``{"$tensor": name}``) and for each tensor its
                      dtype (a short whitelist of little-endian numeric types), shape and
                      byte range in the data
the rest              the tensors' bytes, concatenated in order
====================  ==================================================================

Threat model: a checkpoint is the run's own file, but files get truncated (a crash, a full
disk), edited, or swapped. :func:`load_state` validates everything before any value is used —
the header's bounds, the JSON, every dtype, that each tensor's extent is its shape times its
item size and lies inside the data, the data's SHA-256, and that every reference resolves —
and answers anything else with :class:`~privfl.errors.CheckpointError`. Nothing in the file
can name code to run: there is no pickle and no class lookup (floats round-trip exactly
through JSON's shortest repr; NaN and ±∞ are stored as tagged strings).

:func:`save_state` writes to a temporary file in the same directory, flushes it to disk and
renames it over the target (``os.replace``): a reader sees the old checkpoint or the new one,
never a mixture. Secrets never enter a state tree (keys are provisioned afresh on resume).

Random generators: :func:`generator_state` / :func:`restore_generator` turn a seeded
``numpy.random.Generator`` into JSON and back (the 128-bit PCG64 words as decimal strings), so
that a resumed simulation draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from privfl.errors import CheckpointError

__all__ = [
    "FORMAT",
    "VERSION",
    "Stateful",
    "generator_state",
    "load_state",
    "optional_generator_state",
    "require",
    "require_array",
    "restore_generator",
    "restore_optional_generator",
    "save_state",
]

FORMAT = "privfl-checkpoint"
VERSION = 1
_MAX_HEADER = 64 << 20
_DTYPES = frozenset({"<f4", "<f8", "<i4", "<i8", "<u1", "<u4", "<u8", "|b1", "|u1"})
_TENSOR = "$tensor"
_FLOAT = "$float"


@runtime_checkable
class Stateful(Protocol):
    """A component whose state between rounds can be saved and restored.

    ``state_dict`` returns a state tree (see the module docstring); ``load_state_dict`` restores
    it in place, validating it first (a :class:`~privfl.errors.CheckpointError` otherwise).
    """

    def state_dict(self) -> dict[str, Any]:
        """The component's state as a state tree."""
        ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        ...


# --- trees -----------------------------------------------------------------------------------
def _flatten(node: Any, tensors: list[np.ndarray], path: str) -> Any:
    if isinstance(node, np.ndarray):
        arr = np.ascontiguousarray(node)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.byteorder == ">" else arr.dtype
        if dt.str not in _DTYPES:
            raise CheckpointError(f"{path}: dtype {arr.dtype} cannot be checkpointed")
        tensors.append(arr.astype(dt, copy=False))
        return {_TENSOR: len(tensors) - 1}
    if isinstance(node, Mapping):
        out = {}
        for k, v in node.items():
            if not isinstance(k, str) or k.startswith("$"):
                raise CheckpointError(f"{path}: key {k!r} must be a string not starting with $")
            out[k] = _flatten(v, tensors, f"{path}.{k}")
        return out
    if isinstance(node, (list, tuple)):
        return [_flatten(v, tensors, f"{path}[{i}]") for i, v in enumerate(node)]
    if isinstance(node, (bool, np.bool_)):
        return bool(node)
    if isinstance(node, (int, np.integer)):
        return int(node)
    if isinstance(node, (float, np.floating)):
        x = float(node)
        return x if math.isfinite(x) else {_FLOAT: repr(x)}
    if node is None or isinstance(node, str):
        return node
    raise CheckpointError(f"{path}: a {type(node).__name__} cannot be checkpointed")


def _unflatten(node: Any, tensors: list[np.ndarray]) -> Any:
    if isinstance(node, dict):
        if _TENSOR in node:
            i = node[_TENSOR]
            if len(node) != 1 or not isinstance(i, int) or not 0 <= i < len(tensors):
                raise CheckpointError(f"bad tensor reference {node!r}")
            return tensors[i]
        if _FLOAT in node:
            v = node[_FLOAT]
            if len(node) != 1 or v not in ("nan", "inf", "-inf"):
                raise CheckpointError(f"bad float {node!r}")
            return float(v)
        return {k: _unflatten(v, tensors) for k, v in node.items()}
    if isinstance(node, list):
        return [_unflatten(v, tensors) for v in node]
    return node


def save_state(path: str | Path, tree: Mapping[str, Any]) -> None:
    """Write ``tree`` to ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tensors: list[np.ndarray] = []
    flat = _flatten(tree, tensors, "state")
    blobs, specs, offset = [], [], 0
    for arr in tensors:
        raw = arr.tobytes()
        specs.append({"dtype": arr.dtype.str, "shape": list(arr.shape),
                      "offsets": [offset, offset + len(raw)]})
        blobs.append(raw)
        offset += len(raw)
    data = b"".join(blobs)
    header = json.dumps({"format": FORMAT, "version": VERSION,
                         "sha256": hashlib.sha256(data).hexdigest(), "tensors": specs,
                         "state": flat}, allow_nan=False, separators=(",", ":")).encode()
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(struct.pack("<Q", len(header)))
            fh.write(header)
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {str(path)!r}: "
                              f"{exc.strerror or exc}") from exc
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def load_state(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint written by :func:`save_state`.

    Raises:
        CheckpointError: The file is missing, truncated, corrupted or not a privfl checkpoint.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {str(path)!r}: "
                              f"{exc.strerror or exc}") from exc
    where = f"checkpoint {str(path)!r}"
    if len(raw) < 8:
        raise CheckpointError(f"{where} is truncated ({len(raw)} bytes)")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > min(_MAX_HEADER, len(raw) - 8):
        raise CheckpointError(f"{where}: header length {n} exceeds the file")
    try:
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{where}: the header is not JSON ({exc})") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{where} is not a privfl checkpoint")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{where} has version {header.get('version')!r}; this privfl "
                              f"reads version {VERSION}")
    data = raw[8 + n:]
    if hashlib.sha256(data).hexdigest() != header.get("sha256"):
        raise CheckpointError(f"{where} is corrupted or truncated (its data does not match "
                              "the recorded SHA-256)")
    specs = header.get("tensors")
    if not isinstance(specs, list):
        raise CheckpointError(f"{where}: `tensors` must be a list")
    tensors = [_tensor(spec, data, where, i) for i, spec in enumerate(specs)]
    tree = _unflatten(header.get("state"), tensors)
    if not isinstance(tree, dict):
        raise CheckpointError(f"{where}: the state must be a table")
    return tree


def _tensor(spec: Any, data: bytes, where: str, i: int) -> np.ndarray:
    try:
        dtype, shape, (lo, hi) = spec["dtype"], spec["shape"], spec["offsets"]
        ok = (dtype in _DTYPES and isinstance(shape, list)
              and all(isinstance(s, int) and s >= 0 for s in shape)
              and isinstance(lo, int) and isinstance(hi, int) and 0 <= lo <= hi <= len(data))
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise CheckpointError(f"{where}: tensor {i} has a malformed description {spec!r}")
    dt = np.dtype(dtype)
    if math.prod(shape) * dt.itemsize != hi - lo:
        raise CheckpointError(f"{where}: tensor {i} of shape {shape} and dtype {dtype} does not "
                              f"fill its {hi - lo} bytes")
    return np.frombuffer(data, dtype=dt, count=math.prod(shape), offset=lo).reshape(shape).copy()


# --- random generators ----------------------------------------------------------------------------
def generator_state(gen: np.random.Generator) -> dict[str, Any]:
    """A seeded generator's exact position, as JSON-safe values."""
    st = gen.bit_generator.state
    if st.get("bit_generator") != "PCG64":
        raise CheckpointError(f"only PCG64 generators are checkpointed; found "
                              f"{st.get('bit_generator')!r}")
    return {"bit_generator": "PCG64", "state": str(st["state"]["state"]),
            "inc": str(st["state"]["inc"]), "has_uint32": int(st["has_uint32"]),
            "uinteger": int(st["uinteger"])}


def restore_generator(gen: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Put ``gen`` at the position :func:`generator_state` recorded."""
    try:
        if state["bit_generator"] != "PCG64":
            raise ValueError(state["bit_generator"])
        gen.bit_generator.state = {
            "bit_generator": "PCG64",
            "state": {"state": int(state["state"]), "inc": int(state["inc"])},
            "has_uint32": int(state["has_uint32"]), "uinteger": int(state["uinteger"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"bad generator state: {exc!r}") from exc


def optional_generator_state(gen: Any) -> dict[str, Any] | None:
    """:func:`generator_state` of a seeded generator; ``None`` for the CSPRNG (or none)."""
    return generator_state(gen) if isinstance(gen, np.random.Generator) else None


def restore_optional_generator(gen: Any, state: Mapping[str, Any], key: str, what: str
                               ) -> None:
    """Restore ``state[key]`` (from :func:`optional_generator_state`) into ``gen``.

    Raises:
        CheckpointError: The checkpoint and this run disagree on whether ``what`` is seeded.
    """
    saved = require(state, key, (dict, type(None)))
    seeded = isinstance(gen, np.random.Generator)
    if (saved is None) == seeded:
        raise CheckpointError(f"the checkpoint and this run disagree on whether {what} is "
                              "seeded or drawn from the CSPRNG (secure_randomness)")
    if seeded:
        restore_generator(gen, saved)


def require(state: Mapping[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    """``state[key]`` if it is a ``kind``, else a :class:`CheckpointError`."""
    if not isinstance(state, Mapping) or key not in state:
        raise CheckpointError(f"checkpoint state lacks `{key}`")
    value = state[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and bool not in (
            kind if isinstance(kind, tuple) else (kind,))):
        raise CheckpointError(f"checkpoint `{key}` has the wrong type "
                              f"({type(value).__name__})")
    return value


def require_array(state: Mapping[str, Any], key: str, shape: tuple[int, ...] | None = None,
                  dtype: Any = None) -> np.ndarray:
    """``state[key]`` as an array of ``shape`` and ``dtype`` (if given), else an error."""
    arr = require(state, key, np.ndarray)
    if shape is not None and arr.shape != shape:
        raise CheckpointError(f"checkpoint `{key}` has shape {arr.shape}, expected {shape}")
    if dtype is not None and arr.dtype != np.dtype(dtype):
        raise CheckpointError(f"checkpoint `{key}` has dtype {arr.dtype}, expected "
                              f"{np.dtype(dtype)}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise CheckpointError(f"checkpoint `{key}` holds NaN or Inf")
    out: np.ndarray = arr
    return out
