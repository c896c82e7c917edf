"""The arithmetic low-order check agrees with X25519 itself, on every encoding that matters."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from privfl.errors import MalformedMessageError
from privfl.secagg.keyagreement import SMALL_ORDER_U, check_public, exchange, public_bytes

P = 2**255 - 19


def _encodings(u: int) -> list[bytes]:
    """Every 32-byte key that X25519 reads as u: u and u + p when < 2^255, each ± the top bit."""
    values = [u] + ([u + P] if u + P < 2**255 else [])
    return [(v | top).to_bytes(32, "little") for v in values for top in (0, 1 << 255)]


def test_the_derived_residues_are_the_five_low_order_u() -> None:
    assert len(SMALL_ORDER_U) == 5
    assert {0, 1, P - 1} <= SMALL_ORDER_U
    # the two order-8 points satisfy u([2]P) = 1: (u² − 1)² = 4u(u² + Au + 1)
    for u in SMALL_ORDER_U - {0, 1, P - 1}:
        assert (u * u - 1) ** 2 % P == 4 * u * (u * u + 486662 * u + 1) % P


@pytest.mark.parametrize("u", sorted(SMALL_ORDER_U))
def test_every_encoding_of_a_low_order_point_is_refused_as_x25519_would(u: int) -> None:
    keys = _encodings(u)
    assert len(keys) in (2, 4)
    for key in keys:
        with pytest.raises(ValueError):  # cryptography: the all-zero shared secret
            X25519PrivateKey.generate().exchange(X25519PublicKey.from_public_bytes(key))
        with pytest.raises(MalformedMessageError, match="low-order"):
            check_public(key, "client 3")
        with pytest.raises(MalformedMessageError, match="low-order"):
            exchange(X25519PrivateKey.generate(), key, "client 3")


def test_honest_keys_and_random_bytes_pass_as_x25519_would() -> None:
    probe = X25519PrivateKey.generate()
    for _ in range(300):
        for key in (public_bytes(X25519PrivateKey.generate()), os.urandom(32)):
            check_public(key, "client 1")
            assert len(probe.exchange(X25519PublicKey.from_public_bytes(key))) == 32
    # neighbours of the low-order residues are ordinary points
    for u in SMALL_ORDER_U:
        for v in ((u + 3) % P, (u + P - 3) % P):
            check_public(v.to_bytes(32, "little"), "client 1")


@pytest.mark.parametrize("size", [0, 31, 33])
def test_a_key_of_the_wrong_length_is_refused(size: int) -> None:
    with pytest.raises(MalformedMessageError, match="32"):
        check_public(bytes(size), "client 2")
