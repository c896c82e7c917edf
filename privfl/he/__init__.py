"""CKKS homomorphic encryption of client updates (TenSEAL / SEAL). Hazmat: prefer the recipes.

The server adds ciphertexts and never holds a key; clients share the secret key.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from privfl._lazy import lazy_getattr

if TYPE_CHECKING:
    from privfl.he.keys import ClientKeys, ServerContext
    from privfl.he.params import COMPACT, STANDARD, Backend, CKKSParams, derive_params
    from privfl.he.securesum import CKKSSecureSum

__all__ = [
    "Backend",
    "CKKSParams",
    "CKKSSecureSum",
    "COMPACT",
    "ClientKeys",
    "STANDARD",
    "ServerContext",
    "derive_params",
]

_EXPORTS = {
    "ClientKeys": "privfl.he.keys",
    "ServerContext": "privfl.he.keys",
    "COMPACT": "privfl.he.params",
    "STANDARD": "privfl.he.params",
    "Backend": "privfl.he.params",
    "CKKSParams": "privfl.he.params",
    "derive_params": "privfl.he.params",
    "CKKSSecureSum": "privfl.he.securesum",
}

__getattr__ = lazy_getattr("privfl.he", _EXPORTS)
