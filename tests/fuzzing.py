"""Shared helpers for the decoder fuzz tests."""

from __future__ import annotations

from hypothesis import strategies as st

MUTATION = {"pos": st.integers(0, 10**6), "byte": st.integers(0, 255),
            "op": st.sampled_from(["flip", "cut", "insert", "random"]),
            "blob": st.binary(max_size=300)}


def mutate(good: bytes, pos: int, byte: int, op: str, blob: bytes) -> bytes:
    """One hypothesis-driven mutation of a valid message (or random bytes)."""
    b = bytearray(good)
    i = pos % len(b)
    if op == "flip":
        b[i] = byte
    elif op == "cut":
        b = b[:i]
    elif op == "insert":
        b[i:i] = bytes([byte])
    else:
        b = bytearray(blob)
    return bytes(b)
