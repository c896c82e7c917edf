"""Vectors ⇄ compact CKKS ciphertext bytes (COMPACT backend, through ``tenseal.sealapi``).

Encoding: a float vector is cut into chunks of N values; each chunk becomes N/2 complex slots
zₖ = xₖ + i·x_{k+N/2} (complex packing), is encoded at scale Δ and encrypted **symmetrically with
a seed**: SEAL's serializable ciphertext stores c₀ and the 64-byte seed from which the uniform
c₁ is regenerated, instead of c₁ itself.

Wire layout (inside a privfl wire message): the SEAL ciphertext stream is parsed and split into

* ``prefix`` — SEAL's ciphertext metadata (parms_id, NTT flag, size, N, L, scale, …), identical
  for every chunk and sent once;
* ``c0`` — the N residues mod q₀ of each chunk, each in ⌈log₂q₀/8⌉ little-endian bytes;
* ``seeds`` — SEAL's seed record of each chunk.

The server validates every field, rebuilds the SEAL stream and lets SEAL load it (SEAL checks the
residues against q₀ and expands the seed); it never needs a key. The aggregate goes back as a
full (c₀, c₁) ciphertext in the same byte-packed form.

This depends on SEAL's serialization layout (4.x, as shipped in TenSEAL 0.3.x); the tests pin it
with a round trip.
"""

from __future__ import annotations

import struct
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from privfl.errors import DecryptionError, MalformedMessageError
from privfl.he.keys import shm_path

__all__ = ["SealCodec"]

_HDR = struct.Struct("<HBBBBHQ")  # SEALHeader: magic, size, major, minor, compr, reserved, total
_MAGIC = 0xA15E
_META = struct.Struct("<4QBQQQdQ")  # parms_id, is_ntt, size, N, L, scale, correction factor
_DYN_HDR = 16 + 8  # DynArray: SEALHeader + count
_PREFIX_LEN = _META.size + _DYN_HDR


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


class SealCodec:
    """Encrypts, packs, validates, sums and decrypts for one parameter set (and maybe a key)."""

    def __init__(self, sctx: Any, params: Any, secret_key: Any | None = None) -> None:
        import tenseal.sealapi as sa
        import zstandard

        self.sa = sa
        self.sctx = sctx
        self.n = params.poly_modulus_degree
        self.scale = 2.0**params.scale_bits
        self.q0 = int(sctx.first_context_data().parms().coeff_modulus()[0].value())
        self.nbytes = (self.q0.bit_length() + 7) // 8
        self.parms_id = tuple(int(v) for v in sctx.first_parms_id())
        self._zd = zstandard.ZstdDecompressor()
        self._path = shm_path("ct")
        self._finalizer = weakref.finalize(self, _remove, str(self._path))
        self._encoder = sa.CKKSEncoder(sctx)
        self._evaluator = sa.Evaluator(sctx)
        self._encryptor = sa.Encryptor(sctx, secret_key) if secret_key is not None else None
        self._decryptor = sa.Decryptor(sctx, secret_key) if secret_key is not None else None
        # The header version SEAL writes and accepts: read it from a stream SEAL itself saved.
        sctx.key_context_data().parms().save(str(self._path))
        self._version = tuple(_HDR.unpack_from(self._path.read_bytes())[2:4])

    def close(self) -> None:
        """Remove the scratch file."""
        self._finalizer()

    # --- SEAL streams ---------------------------------------------------------------------
    def _members(self, blob: bytes) -> tuple[bytes, tuple[int, int]]:
        magic, hsize, major, minor, compr, _r, total = _HDR.unpack_from(blob)
        if magic != _MAGIC or hsize != 16 or total != len(blob):
            raise MalformedMessageError("not a SEAL ciphertext stream")
        body = blob[16:]
        if compr == 2:
            body = self._zd.decompress(body, max_output_size=1 << 28)
        elif compr == 1:
            import zlib

            body = zlib.decompress(body)
        return body, (major, minor)

    def _stream(self, members: bytes) -> bytes:
        major, minor = self._version
        return _HDR.pack(_MAGIC, 16, major, minor, 0, 0, 16 + len(members)) + members

    def _check_prefix(self, prefix: bytes, polys: int) -> None:
        if len(prefix) != _PREFIX_LEN:
            raise MalformedMessageError(f"ciphertext prefix has {len(prefix)} bytes, "
                                        f"expected {_PREFIX_LEN}")
        *pid, ntt, size, n, levels, scale, corr = _META.unpack_from(prefix)
        stored = polys * n * levels
        count = struct.unpack_from("<Q", prefix, _META.size + 16)[0]
        problems = []
        if tuple(pid) != self.parms_id:
            problems.append("made under other CKKS parameters (parms_id)")
        if ntt != 1 or size != 2 or n != self.n or levels != 1 or corr != 1:
            problems.append(f"unexpected layout ntt={ntt} size={size} N={n} L={levels}")
        if scale != self.scale:
            problems.append(f"scale {scale} != {self.scale}")
        if count != stored:
            problems.append(f"{count} stored coefficients, expected {stored}")
        if problems:
            raise MalformedMessageError("invalid ciphertext: " + "; ".join(problems))

    def _pack(self, residues: npt.NDArray[np.uint64]) -> bytes:
        b = residues.astype("<u8", copy=False).reshape(-1, 1).view(np.uint8)
        return np.ascontiguousarray(b[:, : self.nbytes]).tobytes()

    def unpack(self, data: bytes, shape: tuple[int, ...]) -> npt.NDArray[np.uint64]:
        """Byte-packed residues back to uint64, checked to lie in [0, q₀)."""
        count = int(np.prod(shape))
        if len(data) != count * self.nbytes:
            raise MalformedMessageError(
                f"{len(data)} residue bytes, expected {count * self.nbytes} for {shape}")
        wide = np.zeros((count, 8), np.uint8)
        wide[:, : self.nbytes] = np.frombuffer(data, np.uint8).reshape(count, self.nbytes)
        out = wide.view("<u8").reshape(shape).astype(np.uint64)
        if out.size and int(out.max()) >= self.q0:
            raise MalformedMessageError("a residue is not reduced modulo q0")
        return out

    # --- client side ------------------------------------------------------------------------
    def encrypt(self, x: npt.NDArray[np.float64]) -> tuple[bytes, bytes, bytes, int]:
        """Encrypt ``x`` → (prefix, packed c₀, seeds, chunks)."""
        if self._encryptor is None:
            raise DecryptionError("this codec holds no secret key")
        n = self.n
        chunks = max(1, -(-len(x) // n))
        padded = np.zeros(chunks * n)
        padded[: len(x)] = x
        prefix = b""
        c0 = np.empty((chunks, n), np.uint64)
        seeds = []
        path = str(self._path)
        for k in range(chunks):
            v = padded[k * n : (k + 1) * n]
            pt = self.sa.Plaintext()
            self._encoder.encode((v[: n // 2] + 1j * v[n // 2 :]).tolist(), self.scale, pt)
            self._encryptor.encrypt_symmetric(pt).save(path)
            members, _ = self._members(self._path.read_bytes())
            prefix = members[:_PREFIX_LEN]
            c0[k] = np.frombuffer(members, "<u8", count=n, offset=_PREFIX_LEN)
            seeds.append(members[_PREFIX_LEN + 8 * n :])
        if len({len(s) for s in seeds}) != 1:
            raise MalformedMessageError("inconsistent seed records")  # pragma: no cover
        return prefix, self._pack(c0), b"".join(seeds), chunks

    def decrypt(self, prefix: bytes, packed: bytes, chunks: int, length: int
                ) -> npt.NDArray[np.float64]:
        """Decrypt an aggregate (full c₀, c₁ ciphertexts) to ``length`` floats."""
        if self._decryptor is None:
            raise DecryptionError("this codec holds no secret key")
        self._check_prefix(prefix, polys=2)
        res = self.unpack(packed, (chunks, 2, self.n))
        out = np.empty(chunks * self.n)
        half = self.n // 2
        for k in range(chunks):
            ct = self._load(prefix + res[k].astype("<u8").tobytes())
            pt = self.sa.Plaintext()
            self._decryptor.decrypt(ct, pt)
            z = np.asarray(self._encoder.decode_complex(pt))
            out[k * self.n : k * self.n + half] = z.real
            out[k * self.n + half : (k + 1) * self.n] = z.imag
        return out[:length]

    # --- server side ------------------------------------------------------------------------
    def _load(self, members: bytes) -> Any:
        self._path.write_bytes(self._stream(members))
        ct = self.sa.Ciphertext()
        try:
            ct.load(self.sctx, str(self._path))
        except Exception as exc:  # SEAL's own validation (ranges, sizes, metadata)
            raise MalformedMessageError(f"SEAL rejected the ciphertext: {exc}") from exc
        return ct

    def load_seeded(self, prefix: bytes, packed: bytes, seeds: bytes, chunks: int) -> list[Any]:
        """Validate and expand an upload into SEAL ciphertexts (no key needed)."""
        self._check_prefix(prefix, polys=1)
        c0 = self.unpack(packed, (chunks, self.n))
        if chunks == 0 or len(seeds) % chunks:
            raise MalformedMessageError(f"{len(seeds)} seed bytes for {chunks} chunks")
        step = len(seeds) // chunks
        if not 64 <= step <= 256:
            raise MalformedMessageError(f"seed records of {step} bytes")
        return [self._load(prefix + c0[k].astype("<u8").tobytes() + seeds[k * step:(k + 1) * step])
                for k in range(chunks)]

    def add_into(self, acc: list[Any] | None, cts: list[Any]) -> list[Any]:
        """Acc += cts, chunk by chunk (SEAL's evaluator)."""
        if acc is None:
            return cts
        for a, c in zip(acc, cts, strict=True):
            self._evaluator.add_inplace(a, c)
        return acc

    def pack_aggregate(self, acc: list[Any]) -> tuple[bytes, bytes]:
        """(prefix, packed residues of c₀ and c₁) of the summed ciphertexts."""
        prefix = b""
        parts = []
        path = str(self._path)
        for ct in acc:
            ct.save(path)
            members, _ = self._members(self._path.read_bytes())
            prefix = members[:_PREFIX_LEN]
            parts.append(np.frombuffer(members, "<u8", count=2 * self.n, offset=_PREFIX_LEN))
        return prefix, self._pack(np.stack(parts))
