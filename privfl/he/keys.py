"""CKKS keys: clients hold the secret key, the server gets a context that cannot decrypt.

Threat model (the same as NVIDIA FLARE's): one symmetric secret key is shared by all clients and
provisioned out of band (in simulation, by the driver). The server receives a
:class:`ServerContext` — parameters and a key label only — and can add ciphertexts but not
decrypt them. Any single client colluding with the server breaks confidentiality of every other
client's update, because that client holds the same key.

The key comes from SEAL's key generator, seeded from the operating system's random source
(``std::random_device``). Secret material is never serialized unless the caller asks with
:meth:`ClientKeys.export_secret`; objects holding it refuse to be pickled.
"""

from __future__ import annotations

import os
import secrets
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from privfl.errors import ConfigurationError
from privfl.he.params import COMPACT, Backend, CKKSParams

__all__ = ["ClientKeys", "ServerContext", "seal_context", "shm_path"]


def shm_path(tag: str) -> Path:
    """A fresh, private (0600) scratch file in RAM: sealapi saves and loads only via paths."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir()
    fd, name = tempfile.mkstemp(prefix=f"privfl-{tag}-", dir=base)
    os.close(fd)
    os.chmod(name, 0o600)
    return Path(name)


def seal_context(params: CKKSParams) -> Any:
    """A SEAL context for ``params`` at 128-bit security (no keys)."""
    import tenseal.sealapi as sa

    parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(sa.CoeffModulus.Create(params.poly_modulus_degree,
                                                   list(params.coeff_mod_bit_sizes)))
    ctx = sa.SEALContext(parms, True, sa.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise ConfigurationError(f"SEAL rejected the CKKS parameters {params}.")
    return ctx


@dataclass(frozen=True, slots=True)
class ServerContext:
    """What the aggregator holds: parameters and the key label. No key of any kind.

    Attributes:
        params: The CKKS parameters.
        key_id: Random 16-byte label of the clients' key (to reject ciphertexts made under
            another key's label; it reveals nothing about the key).
    """

    params: CKKSParams
    key_id: bytes
    tenseal_public: bytes = b""
    """STANDARD only: TenSEAL context serialized with no key at all (parameters and scale)."""

    def to_bytes(self) -> bytes:
        """What is sent to the server: fingerprint, key label, key-less TenSEAL context."""
        return self.params.fingerprint() + self.key_id + self.tenseal_public


@dataclass(eq=False)
class ClientKeys:
    """The clients' shared secret key (and, for STANDARD, their TenSEAL context)."""

    params: CKKSParams
    key_id: bytes
    _secret: Any = field(repr=False)
    _tenseal_ctx: Any = field(default=None, repr=False)

    @classmethod
    def generate(cls, params: CKKSParams = COMPACT) -> ClientKeys:
        """Fresh keys for ``params``."""
        key_id = secrets.token_bytes(16)
        if params.backend is Backend.TENSEAL:
            import tenseal as ts

            ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree,
                             coeff_mod_bit_sizes=list(params.coeff_mod_bit_sizes),
                             encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC)
            ctx.global_scale = 2.0**params.scale_bits
            return cls(params, key_id, ctx.secret_key(), ctx)
        import tenseal.sealapi as sa

        keygen = sa.KeyGenerator(seal_context(params))
        return cls(params, key_id, keygen.secret_key())

    def server_context(self) -> ServerContext:
        """The key-less context to hand to the server."""
        public = b""
        if self._tenseal_ctx is not None:
            public = self._tenseal_ctx.serialize(save_public_key=False, save_secret_key=False,
                                                 save_galois_keys=False, save_relin_keys=False)
        return ServerContext(self.params, self.key_id, public)

    def __reduce__(self) -> str | tuple[Any, ...]:
        raise TypeError("ClientKeys holds a secret key and cannot be pickled. Tip: use "
                        "export_secret(...) deliberately to provision clients.")

    def export_secret(self, *, i_understand_this_reveals_the_key: bool = False) -> bytes:
        """Serialize the secret key (to provision other clients). Refuses unless asked twice."""
        if not i_understand_this_reveals_the_key:
            raise ConfigurationError(
                "export_secret would serialize the secret key. Pass "
                "`i_understand_this_reveals_the_key=True` to do it.")
        if self._tenseal_ctx is not None:
            blob: bytes = self._tenseal_ctx.serialize(save_secret_key=True)
            return self.key_id + blob
        path = shm_path("sk")
        try:
            self._secret.save(str(path))
            return self.key_id + path.read_bytes()
        finally:
            path.unlink(missing_ok=True)
