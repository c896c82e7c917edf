"""Integer coefficient vectors ⇄ compact CKKS ciphertext bytes (COMPACT, via ``tenseal.sealapi``).

Encoding: a vector of integer coefficients mᵢ (already reduced mod q₀, see :mod:`.exact`) is cut
into chunks of N and each chunk is the plaintext polynomial Σ mᵢ·Xⁱ itself — no canonical
embedding, so nothing is approximated. A chunk is encrypted **symmetrically with a seed**:
SEAL's serializable encryption of zero gives c₀ = −(a·s + e) and a 64-byte seed from which the
uniform c₁ = a is regenerated; the codec adds NTT(m) to c₀ (SEAL keeps CKKS ciphertexts in the
NTT domain). Decryption is SEAL's (c₀ + c₁·s = m + e in the NTT domain) followed by the inverse
NTT, which yields the integer coefficients m + e exactly.

NTTs are SEAL's own: up to 15 polynomials are written as the components of one ciphertext in
coefficient form (plus a component of ones, so that SEAL never sees a "transparent" ciphertext),
transformed with ``Evaluator.transform_to_ntt_inplace`` / ``transform_from_ntt_inplace`` and
read back. No key is involved.

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
_PT_HEAD = struct.Struct("<4QQd")  # Plaintext: parms_id, coeff_count, scale
_NTT_BATCH = 15  # SEAL ciphertexts have at most 16 components; one is the ones row


def _remove(path: str) -> None:
    Path(path).unlink(missing_ok=True)


class SealCodec:
    """Encrypts, packs, validates, sums and decrypts for one parameter set.

    Holds no key: the client side passes the round's secret key to :meth:`encrypt` and
    :meth:`decrypt`; the server side never has one.
    """

    def __init__(self, sctx: Any, params: Any) -> None:
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
        self._evaluator = sa.Evaluator(sctx)
        self._zero = sa.Plaintext()
        sa.CKKSEncoder(sctx).encode([0.0] * (self.n // 2), self.scale, self._zero)
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

    def _dyn_header(self, count: int) -> bytes:
        major, minor = self._version
        return _HDR.pack(_MAGIC, 16, major, minor, 0, 0, _DYN_HDR + 8 * count) + \
            struct.pack("<Q", count)

    def _prefix(self, size: int, ntt: bool) -> bytes:
        return _META.pack(*self.parms_id, int(ntt), size, self.n, 1, self.scale, 1) + \
            self._dyn_header(size * self.n)

    def _saved(self, obj: Any) -> bytes:
        obj.save(str(self._path))
        return self._members(self._path.read_bytes())[0]

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

    # --- NTTs (SEAL's, no key) --------------------------------------------------------------
    def ntt(self, rows: npt.NDArray[np.uint64], *, inverse: bool = False
            ) -> npt.NDArray[np.uint64]:
        """The negacyclic NTT mod q₀ of each row (or its inverse), computed by SEAL."""
        out = np.empty_like(rows)
        ones = np.ones(self.n, "<u8").tobytes()
        for a in range(0, len(rows), _NTT_BATCH):
            batch = rows[a : a + _NTT_BATCH]
            body = np.ascontiguousarray(batch, "<u8").tobytes() + ones
            ct = self._load(self._prefix(len(batch) + 1, ntt=inverse) + body)
            if inverse:
                self._evaluator.transform_from_ntt_inplace(ct)
            else:
                self._evaluator.transform_to_ntt_inplace(ct)
            members = self._saved(ct)
            out[a : a + len(batch)] = np.frombuffer(
                members, "<u8", count=len(batch) * self.n, offset=_PREFIX_LEN
            ).reshape(len(batch), self.n)
        return out

    # --- client side ------------------------------------------------------------------------
    def encrypt(self, secret_key: Any, coeffs: npt.NDArray[np.uint64]
                ) -> tuple[bytes, bytes, bytes, int]:
        """Encrypt rows of N coefficients (mod q₀) → (prefix, packed c₀, seeds, chunks)."""
        chunks, n = coeffs.shape
        if n != self.n or chunks < 1:
            raise ValueError("coefficients must be a (chunks, N) array")
        encryptor = self.sa.Encryptor(self.sctx, secret_key)
        shifted = self.ntt(coeffs)
        prefix = b""
        c0 = np.empty((chunks, n), np.uint64)
        seeds = []
        for k in range(chunks):
            members = self._saved(encryptor.encrypt_symmetric(self._zero))
            prefix = members[:_PREFIX_LEN]
            zero_c0 = np.frombuffer(members, "<u8", count=n, offset=_PREFIX_LEN)
            c0[k] = zero_c0 + shifted[k]  # both < q0 < 2^60: no uint64 overflow
            seeds.append(members[_PREFIX_LEN + 8 * n :])
        np.subtract(c0, np.uint64(self.q0), out=c0, where=c0 >= np.uint64(self.q0))
        if len({len(s) for s in seeds}) != 1:
            raise MalformedMessageError("inconsistent seed records")  # pragma: no cover
        return prefix, self._pack(c0), b"".join(seeds), chunks

    def decrypt(self, secret_key: Any, prefix: bytes, packed: bytes, chunks: int
                ) -> npt.NDArray[np.int64]:
        """Decrypt an aggregate (full c₀, c₁ ciphertexts) to centred coefficients m + e."""
        self._check_prefix(prefix, polys=2)
        res = self.unpack(packed, (chunks, 2, self.n))
        decryptor = self.sa.Decryptor(self.sctx, secret_key)
        planes = np.empty((chunks, self.n), np.uint64)
        offset = _PT_HEAD.size + _DYN_HDR
        for k in range(chunks):
            ct = self._load(prefix + res[k].astype("<u8").tobytes())
            pt = self.sa.Plaintext()
            try:
                decryptor.decrypt(ct, pt)
            except Exception as exc:
                raise DecryptionError(f"SEAL cannot decrypt chunk {k}: {exc}") from exc
            planes[k] = np.frombuffer(self._saved(pt), "<u8", count=self.n, offset=offset)
        coeffs = self.ntt(planes, inverse=True).astype(np.int64)
        half = self.q0 // 2
        out: npt.NDArray[np.int64] = np.where(coeffs > half, coeffs - self.q0, coeffs)
        return out.reshape(-1)

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
        for ct in acc:
            members = self._saved(ct)
            prefix = members[:_PREFIX_LEN]
            parts.append(np.frombuffer(members, "<u8", count=2 * self.n, offset=_PREFIX_LEN))
        return prefix, self._pack(np.stack(parts))
