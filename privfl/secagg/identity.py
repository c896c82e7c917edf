"""Long-term client identities for secure aggregation against a malicious server.

Each client holds an Ed25519 signing key (RFC 8032, from the ``cryptography`` package; the
private key comes from the OS CSPRNG and is never serialized by privfl). Its public key is
registered *out of band* — by whoever enrols the client, not by the aggregation server — and
pinned in every client's process as an :class:`IdentityRegistry`. A client then accepts a
peer's round keys, and a survivor list, only with that peer's signature over them, so a server
that swaps, withholds, replays or forges keys, or tells different clients different stories
about who survived, is caught (Bonawitz et al., CCS 2017, the actively secure variant).

Threat model: the registry is authentic (a server that can register identities of its choice
can impersonate any number of clients: that is the Sybil attack no protocol prevents).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from privfl.core.spec import ClientId
from privfl.errors import ConfigurationError, MalformedMessageError

__all__ = ["IdentityBook", "IdentityKey", "IdentityRegistry", "provision_identities"]

PUBLIC_BYTES = 32
SIGNATURE_BYTES = 64


class IdentityKey:
    """One client's long-term Ed25519 signing key (kept on the client; never serialized)."""

    def __init__(self) -> None:
        self._key = Ed25519PrivateKey.generate()

    def public_bytes(self) -> bytes:
        """The 32-byte public key to register out of band."""
        return self._key.public_key().public_bytes(serialization.Encoding.Raw,
                                                    serialization.PublicFormat.Raw)

    def sign(self, message: bytes) -> bytes:
        """A 64-byte Ed25519 signature of ``message``."""
        return self._key.sign(message)

    def __repr__(self) -> str:
        return f"IdentityKey(public={self.public_bytes().hex()[:16]}…)"


@dataclass(frozen=True)
class IdentityRegistry:
    """Pinned public identities: client id → Ed25519 public key (public information)."""

    keys: Mapping[ClientId, bytes]

    def __post_init__(self) -> None:
        parsed = {}
        for client, raw in self.keys.items():
            if not isinstance(client, int) or isinstance(client, bool) or client < 0:
                raise ConfigurationError(f"identity for a bad client id {client!r}")
            if not isinstance(raw, bytes) or len(raw) != PUBLIC_BYTES:
                raise ConfigurationError(f"client {client}'s identity must be 32 bytes")
            parsed[client] = Ed25519PublicKey.from_public_bytes(raw)
        object.__setattr__(self, "_parsed", parsed)

    def __contains__(self, client: object) -> bool:
        return client in self.keys

    def verify(self, client: ClientId, message: bytes, signature: bytes) -> bool:
        """Whether ``signature`` is ``client``'s signature of ``message`` (unknown: False)."""
        key = self._parsed.get(client)  # type: ignore[attr-defined]
        if key is None or len(signature) != SIGNATURE_BYTES:
            return False
        try:
            key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def to_bytes(self) -> bytes:
        """Id (u32, little-endian) and key per client, sorted by id, for distribution."""
        return b"".join(c.to_bytes(4, "little") + self.keys[c] for c in sorted(self.keys))

    @classmethod
    def from_bytes(cls, blob: bytes) -> IdentityRegistry:
        """Inverse of :meth:`to_bytes` (raises :class:`MalformedMessageError`)."""
        size = 4 + PUBLIC_BYTES
        if len(blob) % size:
            raise MalformedMessageError("identity registry of a bad length")
        rows = [blob[i:i + size] for i in range(0, len(blob), size)]
        ids = [int.from_bytes(r[:4], "little") for r in rows]
        if ids != sorted(set(ids)):
            raise MalformedMessageError("identity registry ids must be sorted and distinct")
        try:
            return cls({c: r[4:] for c, r in zip(ids, rows, strict=True)})
        except (ConfigurationError, ValueError) as exc:
            raise MalformedMessageError(f"bad identity registry: {exc}") from exc


@dataclass(frozen=True)
class IdentityBook:
    """What a client process is provisioned with: its own key(s) and the pinned registry.

    A deployed client holds one key; an in-process simulation holds the keys of the clients
    it simulates (never the server's business: the server side only ever sees the registry).
    """

    registry: IdentityRegistry
    keys: Mapping[ClientId, IdentityKey]

    def key(self, client: ClientId) -> IdentityKey:
        """``client``'s signing key (raises :class:`ConfigurationError` if not provisioned)."""
        key = self.keys.get(client)
        if key is None or client not in self.registry:
            raise ConfigurationError(f"client {client} has no provisioned identity")
        if key.public_bytes() != self.registry.keys[client]:
            raise ConfigurationError(f"client {client}'s key does not match the registry")
        return key


def provision_identities(clients: Iterable[ClientId]) -> IdentityBook:
    """Fresh identities for ``clients`` and their registry (enrolment, done out of band)."""
    keys = {c: IdentityKey() for c in clients}
    return IdentityBook(IdentityRegistry({c: k.public_bytes() for c, k in keys.items()}), keys)
