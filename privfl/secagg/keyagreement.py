"""X25519 key agreement hardened for keys that come from an adversary (internal).

A public key received over the wire may be any 32 bytes. X25519 (RFC 7748) maps every one of
them to a point, but the eight low-order points (the all-zero key among them) give an all-zero
shared secret whatever the private scalar; ``cryptography`` then raises a bare ``ValueError``.
Here that becomes a :class:`~privfl.errors.MalformedMessageError` naming the sender, so a bad
key excludes one client instead of crashing an honest peer or the server. Receivers of an
advertised key call :func:`check_public` before relaying it: every low-order point gives zero
with *every* clamped scalar, so one agreement with a throwaway key decides it.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privfl.errors import MalformedMessageError

__all__ = ["KEY_BYTES", "check_public", "exchange", "hkdf", "private_bytes", "public_bytes"]

KEY_BYTES = 32


def public_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte public key of ``key``."""
    return key.public_key().public_bytes(serialization.Encoding.Raw,
                                         serialization.PublicFormat.Raw)


def private_bytes(key: X25519PrivateKey) -> bytes:
    """The raw 32-byte private scalar of ``key`` (for secret sharing only)."""
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                             serialization.NoEncryption())


def exchange(key: X25519PrivateKey, peer: bytes, who: str) -> bytes:
    """X25519(key, peer).

    Raises:
        MalformedMessageError: ``peer`` is not 32 bytes or is a low-order point.
    """
    if len(peer) != KEY_BYTES:
        raise MalformedMessageError(f"{who}: public key of {len(peer)} bytes, expected 32")
    try:
        return key.exchange(X25519PublicKey.from_public_bytes(peer))
    except ValueError as exc:
        raise MalformedMessageError(
            f"{who}: public key is a low-order point (the shared secret would be zero)") from exc


_PROBE: list[X25519PrivateKey] = []


def check_public(peer: bytes, who: str) -> None:
    """Reject a public key that is not 32 bytes or is a low-order point.

    X25519 with any clamped scalar (a multiple of the cofactor 8) maps exactly the low-order
    points to the all-zero output, which ``cryptography`` refuses; the probe scalar is one
    random key per process (the output is discarded, so it need not be fresh).
    """
    if not _PROBE:
        _PROBE.append(X25519PrivateKey.generate())
    exchange(_PROBE[0], peer, who)


_NO_SALT = bytes(32)


def hkdf(shared: bytes, info: bytes) -> bytes:
    """HKDF-SHA256 (RFC 5869) of ``shared`` with ``info``, 32 bytes, no salt.

    Written out with the standard library's HMAC — one extract and one expand block, exactly
    RFC 5869 for L = 32 — because building a ``cryptography`` HKDF object per call costs ten
    times the hashing, and a SecAgg+ server derives one seed per (dropped client, neighbour)
    pair. A test checks it against ``cryptography``'s HKDF.
    """
    prk = hmac.digest(_NO_SALT, shared, "sha256")  # salt absent: HashLen zeros
    return hmac.digest(prk, info + b"\x01", "sha256")
