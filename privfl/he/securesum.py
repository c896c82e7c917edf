"""The CKKS secure sum: the server adds ciphertexts and never holds a key.

Protocol (two exchanges):

1. The server asks every selected client for its input. Each client pre-weights its value,
   appends its weight as one more slot, quantises x' = (w·x, w) to the grid 2^−f and encrypts it
   under the round's key (COMPACT rotates keys every round, see :mod:`privfl.he.keys`). The
   server validates each upload (parameters fingerprint, key label, chunk count, SEAL metadata,
   residue ranges), expands it and adds it into one running ciphertext as it arrives (memory
   O(d)).
2. The server sends the summed ciphertext, with the number of ciphertexts in it, to two
   surviving clients; each decrypts and releases only the **exact** grid sum (Σ w·x, Σ w)
   (:mod:`privfl.he.exact`): never the raw m + e, from which the server could solve for the key
   (Li & Micciancio 2021). The server accepts the result only if both decryptions are equal, and
   checks that Σ w is plausible.

Threat model: semi-honest server that sees only ciphertexts of individual updates and the exact
decrypted sum — the decryptions carry no information about the key. **Any client colluding with
the server breaks confidentiality**, because all clients share the key. Clients learn the sum. A
client can lie about the decryption; a second decryptor detects that unless both collude. A
malicious server (one that asks for decryptions of something other than the sum) is out of
scope.

Privacy of the sum itself is the DP layer's job. The sum's error is below ``precision`` in the
worst case (stochastic rounding of each input to 2^−f, n·2^−f ≤ precision).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from privfl.core import wire
from privfl.core.ring import rounding_rng
from privfl.core.securesum import (
    SPEC_FIELDS,
    ClientSession,
    SecureSumProcess,
    ServerSession,
    TrustAssumption,
    Visibility,
    check_round_clients,
    spec_from_message,
    spec_values,
)
from privfl.core.spec import (
    BOUND_SLACK,
    ClientId,
    ContributionLike,
    SumResult,
    ValueSpec,
    check_min_clients,
    weighted_input,
)
from privfl.errors import (
    ConfigurationError,
    DecryptionError,
    MalformedMessageError,
    ProtocolAbortError,
    ProtocolViolationError,
)
from privfl.he.exact import from_coefficients, quantize, round_to_grid, to_coefficients
from privfl.he.keys import ClientKeys, ServerContext, seal_context
from privfl.he.parallel import MIN_PARALLEL_CHUNKS, default_workers
from privfl.he.params import COMPACT, Backend, CKKSParams, derive_params, standard_error_bound

__all__ = ["CKKSSecureSum"]

F, T = wire.Field, wire.FieldType
_ID = (F(1, "fingerprint", T.BYTES), F(2, "key_id", T.BYTES))
_REQUEST = wire.Schema(kind=20, name="ckks.request", fields=(
    *_ID, F(3, "length", T.UINT), F(4, "chunks", T.UINT)))
_INPUT = wire.Schema(kind=21, name="ckks.input", fields=(
    *_ID, F(3, "chunks", T.UINT), F(4, "prefix", T.BYTES, optional=True),
    F(5, "c0", T.BYTES, optional=True), F(6, "seeds", T.BYTES, optional=True),
    F(7, "tenseal", T.BYTES, optional=True)))
_AGGREGATE = wire.Schema(kind=22, name="ckks.aggregate", fields=(
    *_ID, F(3, "chunks", T.UINT), F(4, "length", T.UINT), F(5, "prefix", T.BYTES, optional=True),
    F(6, "residues", T.BYTES, optional=True), F(7, "tenseal", T.BYTES, optional=True),
    F(8, "contributors", T.UINT)))
_DECRYPTED = wire.Schema(kind=23, name="ckks.decrypted", fields=(
    F(1, "fingerprint", T.BYTES), F(2, "sum", T.ARRAY, dtype="<f8")))

_DECRYPTORS = 2


@contextlib.contextmanager
def _quiet() -> Any:
    """TenSEAL prints a multi-line warning for every multi-ciphertext vector."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class _Engine:
    """Backend-specific encrypt/add/decrypt (COMPACT via sealapi, or TenSEAL's public API)."""

    def __init__(self, params: CKKSParams, length: int, keys: ClientKeys | None,
                 server_ctx: ServerContext, workers: int = 1) -> None:
        if params.frac_bits is None:
            raise ConfigurationError("CKKS parameters need `frac_bits`: use derive_params().")
        self.params = params
        self.frac_bits = params.frac_bits
        self.length = length
        self.chunks = -(-length // params.values_per_ciphertext)
        self.fingerprint = params.fingerprint()
        self.key_id = server_ctx.key_id
        self.keys = keys
        if params.backend is Backend.COMPACT:
            from privfl.he.codec import SealCodec

            self.codec: Any = SealCodec(seal_context(params), params)
            self.pool: Any = None
            if keys is not None and workers > 1 and self.chunks >= MIN_PARALLEL_CHUNKS:
                from privfl.he.parallel import ChunkPool

                secret = keys.export_secret(i_understand_this_reveals_the_key=True)
                self.pool = ChunkPool(params, secret, workers)
        else:
            import tenseal as ts

            self.ts = ts
            self.ctx = keys._tenseal_ctx if keys is not None else ts.context_from(
                server_ctx.tenseal_public)

    def ident(self) -> dict[str, object]:
        return {"fingerprint": self.fingerprint, "key_id": self.key_id}

    def check_ident(self, msg: wire.DecodedMessage) -> None:
        if msg.raw("fingerprint") != self.fingerprint:
            raise MalformedMessageError("ciphertext made under other CKKS parameters")
        if msg.raw("key_id") != self.key_id:
            raise MalformedMessageError("ciphertext made under another key")

    # client
    def encrypt(self, x: np.ndarray, round_id: int, rng: np.random.Generator
                ) -> dict[str, object]:
        grid = quantize(x, self.frac_bits, rng)
        if self.params.backend is Backend.COMPACT:
            coeffs = to_coefficients(grid, self.params.noise_bits, self.codec.q0, self.codec.n)
            if self.pool is not None:
                prefix, c0, seeds, chunks = self.pool.encrypt(coeffs, round_id)
            else:
                key = self._keys().round_key(round_id)
                prefix, c0, seeds, chunks = self.codec.encrypt(key, coeffs)
            return {"chunks": chunks, "prefix": prefix, "c0": c0, "seeds": seeds}
        with _quiet():
            vec = self.ts.ckks_vector(self.ctx, (grid * 2.0**-self.frac_bits).tolist())
        return {"chunks": self.chunks, "tenseal": vec.serialize()}

    def _keys(self) -> ClientKeys:
        if self.keys is None:
            raise DecryptionError("the server holds no key")
        return self.keys

    def decrypt(self, msg: wire.DecodedMessage) -> np.ndarray:
        """The exact grid sum of an aggregate; nothing else leaves the decryptor."""
        if msg.uint("chunks") != self.chunks or msg.uint("length") != self.length:
            raise MalformedMessageError("aggregate of the wrong size")
        contributors = msg.uint("contributors")
        if contributors < 1:
            raise MalformedMessageError("an aggregate of no ciphertexts")
        try:
            if self.params.backend is Backend.COMPACT:
                key = self._keys().round_key(msg.round_id)
                coeffs = self.codec.decrypt(key, msg.raw("prefix"), msg.raw("residues"),
                                            self.chunks)
                total = from_coefficients(coeffs, self.params.noise_bits, contributors,
                                          self.length)
                out: np.ndarray = total.astype(np.float64) * 2.0**-self.frac_bits
                return out
            vec = self.ts.ckks_vector_from(self.ctx, msg.raw("tenseal"))
            decoded = np.asarray(vec.decrypt(), dtype=np.float64)
        except KeyError as exc:
            raise MalformedMessageError(f"aggregate lacks field {exc}") from exc
        except (MalformedMessageError, DecryptionError):
            raise
        except Exception as exc:
            raise DecryptionError(f"cannot decrypt the aggregate: {exc}") from exc
        if decoded.shape != (self.length,):
            raise MalformedMessageError(f"aggregate of {decoded.shape} values")
        peak = float(np.max(np.abs(decoded))) if decoded.size else 0.0
        return round_to_grid(decoded, self.frac_bits,
                             standard_error_bound(self.params, contributors, peak))

    # server
    def load(self, msg: wire.DecodedMessage) -> Any:
        if msg.uint("chunks") != self.chunks:
            raise MalformedMessageError(
                f"{msg.uint('chunks')} chunks, expected {self.chunks}")
        try:
            if self.params.backend is Backend.COMPACT:
                return self.codec.load_seeded(msg.raw("prefix"), msg.raw("c0"), msg.raw("seeds"),
                                              self.chunks)
            vec = self.ts.ckks_vector_from(self.ctx, msg.raw("tenseal"))
        except KeyError as exc:
            raise MalformedMessageError(f"upload lacks field {exc}") from exc
        except MalformedMessageError:
            raise
        except Exception as exc:  # TenSEAL/protobuf parse errors
            raise MalformedMessageError(f"invalid TenSEAL ciphertext: {exc}") from exc
        if vec.size() != self.length:
            raise MalformedMessageError(f"ciphertext of {vec.size()} values, expected "
                                        f"{self.length}")
        return vec

    def add(self, acc: Any, item: Any) -> Any:
        if self.params.backend is Backend.COMPACT:
            return self.codec.add_into(acc, item)
        if acc is None:
            return item
        try:
            acc.add_(item)
        except Exception as exc:
            raise MalformedMessageError(f"ciphertexts cannot be added: {exc}") from exc
        return acc

    def aggregate(self, acc: Any, contributors: int) -> dict[str, object]:
        base = {"chunks": self.chunks, "length": self.length, "contributors": contributors}
        if self.params.backend is Backend.COMPACT:
            prefix, residues = self.codec.pack_aggregate(acc)
            return {**base, "prefix": prefix, "residues": residues}
        return {**base, "tenseal": acc.serialize()}


class _Server:
    def __init__(self, engine: _Engine, spec: ValueSpec, round_id: int,
                 clients: Sequence[ClientId]) -> None:
        self.engine = engine
        self.spec = spec
        self.round_id = round_id
        self._expected = frozenset(clients)
        self._received: list[ClientId] = []
        self._acc: Any = None
        self._stage = 0
        self._decryptors: tuple[ClientId, ...] = ()
        self._decrypted: dict[ClientId, np.ndarray] = {}

    def receive(self, client: ClientId, message: bytes) -> None:
        if client not in self._expected:
            raise ProtocolViolationError(f"round {self.round_id}: client {client} not selected")
        if self._stage == 1:
            if client in self._received:
                raise ProtocolViolationError(f"duplicate input from client {client}")
            msg = wire.decode(message, _INPUT)
            self._check_round(client, msg)
            self.engine.check_ident(msg)
            item = self.engine.load(msg)  # full validation before the running sum changes
            self._acc = self.engine.add(self._acc, item)
            self._received.append(client)
        elif self._stage == 2:
            if client not in self._decryptors or client in self._decrypted:
                raise ProtocolViolationError(f"unexpected decryption from client {client}")
            msg = wire.decode(message, _DECRYPTED)
            self._check_round(client, msg)
            if msg.raw("fingerprint") != self.engine.fingerprint:
                raise MalformedMessageError("decryption for other parameters")
            value = msg.array("sum")
            if value.shape != (self.engine.length,):
                raise MalformedMessageError(f"decrypted sum has shape {value.shape}")
            self._decrypted[client] = np.array(value, dtype=np.float64)
        else:
            raise ProtocolViolationError(f"round {self.round_id}: not accepting messages now")

    def _check_round(self, client: ClientId, msg: wire.DecodedMessage) -> None:
        if msg.round_id != self.round_id:
            raise ProtocolViolationError(
                f"client {client}: message for round {msg.round_id}, expected {self.round_id}")

    def step(self, replies: Iterable[tuple[ClientId, bytes]]
             ) -> Mapping[ClientId, bytes] | SumResult:
        for client, message in replies:
            self.receive(client, message)
        if self._stage == 0:
            self._stage = 1
            req = wire.encode(_REQUEST, self.round_id, {
                **self.engine.ident(), "length": self.engine.length,
                "chunks": self.engine.chunks})
            return {c: req for c in sorted(self._expected)}
        if self._stage == 1:
            if not self._received:
                raise ProtocolAbortError(f"round {self.round_id}: 0 of {len(self._expected)} "
                                         "clients survived; CKKS needs at least 1.")
            check_min_clients(len(self._received), self.spec, f"round {self.round_id}")
            self._stage = 2
            self._decryptors = tuple(sorted(self._received)[:_DECRYPTORS])
            agg = wire.encode(_AGGREGATE, self.round_id, {
                **self.engine.ident(), **self.engine.aggregate(self._acc, len(self._received))})
            self._acc = None
            return {c: agg for c in self._decryptors}
        if self._stage == 2:
            self._stage = 3
            return self._result()
        raise ProtocolViolationError(f"round {self.round_id} is finished")

    def _result(self) -> SumResult:
        if not self._decrypted:
            raise ProtocolAbortError(f"round {self.round_id}: none of the decryptors "
                                     f"{list(self._decryptors)} returned the sum")
        values = list(self._decrypted.values())
        for v in values[1:]:  # decryptions are exact: honest decryptors agree bit for bit
            if not np.array_equal(v, values[0]):
                raise ProtocolAbortError(
                    f"round {self.round_id}: the decryptors {sorted(self._decrypted)} returned "
                    "different sums; a client lied about the decryption.")
        total = values[0]
        weight = float(total[-1])
        n = len(self._received)
        slack = n * 2.0**-self.engine.frac_bits
        if not 0.0 < weight <= n * self.spec.max_weight * (1 + BOUND_SLACK) + slack:
            raise DecryptionError(
                f"round {self.round_id}: decrypted total weight {weight:.6g} is impossible for "
                f"{n} clients (max weight {self.spec.max_weight}): a ciphertext was made under "
                "another key or a decryptor lied.")
        return SumResult(weighted_sum=total[:-1].copy(), total_weight=weight,
                         contributors=tuple(sorted(self._received)))


class _Client:
    def __init__(self, engine: _Engine, spec: ValueSpec, client: ClientId,
                 rounding_seed: int | None) -> None:
        self.engine = engine
        self.spec = spec
        self.me = client
        self.rounding_seed = rounding_seed

    def export_state(self) -> bytes:
        """Each exchange stands alone: nothing to keep."""
        return b""

    def step(self, request: bytes, contribution: ContributionLike | None) -> bytes:
        kind = wire.peek_kind(request)
        if kind == _REQUEST.kind:
            msg = wire.decode(request, _REQUEST)
            self.engine.check_ident(msg)
            if msg.uint("length") != self.engine.length:
                raise MalformedMessageError("request for a vector of the wrong length")
            x = weighted_input(self.spec, contribution, "CKKS")
            rng = rounding_rng(self.rounding_seed, msg.round_id, self.me)
            return wire.encode(_INPUT, msg.round_id, {
                **self.engine.ident(), **self.engine.encrypt(x, msg.round_id, rng)})
        if kind == _AGGREGATE.kind:
            msg = wire.decode(request, _AGGREGATE)
            self.engine.check_ident(msg)
            total = self.engine.decrypt(msg)
            return wire.encode(_DECRYPTED, msg.round_id, {
                "fingerprint": self.engine.fingerprint, "sum": total})
        raise MalformedMessageError(f"unexpected message kind {kind}")


_CONFIG = wire.Schema(kind=24, name="ckks.config", fields=(
    *SPEC_FIELDS, F(16, "poly_modulus_degree", T.UINT), F(17, "chain", T.TEXT),
    F(18, "scale_bits", T.UINT), F(19, "backend", T.TEXT), F(20, "frac_bits", T.UINT),
    F(21, "key_id", T.BYTES), F(22, "rounding_seed", T.UINT, optional=True)))


class _Process:
    """The server side: parameters and the key label, no key."""

    def __init__(self, spec: ValueSpec, params: CKKSParams, server_ctx: ServerContext,
                 rounding_seed: int | None) -> None:
        self.spec = spec
        self.params = params
        self.server_context = server_ctx
        self.rounding_seed = rounding_seed
        self._server_engine = _Engine(params, spec.length + 1, None, server_ctx)

    def new_round(self, round_id: int, clients: Sequence[ClientId]) -> ServerSession:
        return _Server(self._server_engine, self.spec, round_id,
                       check_round_clients(round_id, clients, self.spec))

    def client_config(self) -> bytes:
        p = self.params
        values: dict[str, object] = {
            **spec_values(self.spec), "poly_modulus_degree": p.poly_modulus_degree,
            "chain": ",".join(map(str, p.coeff_mod_bit_sizes)), "scale_bits": p.scale_bits,
            "backend": p.backend.value, "frac_bits": p.frac_bits or 0,
            "key_id": self.server_context.key_id}
        if self.rounding_seed is not None:
            values["rounding_seed"] = self.rounding_seed
        return wire.encode(_CONFIG, 0, values)

    def client_session(self, client: ClientId) -> ClientSession:
        raise ConfigurationError(
            "a CKKS process is the server side and holds no key. Tip: build client sessions "
            "with `CKKSSecureSum.client(process.client_config())` (simulation) or "
            "`privfl.core.securesum.client_process(config, keys)`.")


class _ClientProcess:
    def __init__(self, spec: ValueSpec, engine: _Engine, rounding_seed: int | None) -> None:
        self.spec = spec
        self.engine = engine
        self.rounding_seed = rounding_seed

    def session(self, client: ClientId) -> ClientSession:
        return _Client(self.engine, self.spec, client, self.rounding_seed)

    def restore(self, client: ClientId, state: bytes) -> ClientSession:
        if state:
            raise MalformedMessageError("the CKKS sum keeps no client state between exchanges")
        return self.session(client)


def ckks_client(config: bytes, secrets: object | None = None, workers: int = 1
                ) -> _ClientProcess:
    """The CKKS sum's client side from its config message and the client's keys.

    Raises:
        MalformedMessageError: A bad message.
        ConfigurationError: No keys, or keys for other parameters or another key label.
    """
    msg = wire.decode(config, _CONFIG)
    spec = spec_from_message(msg)
    try:
        chain = tuple(int(b) for b in str(msg.values["chain"]).split(","))
        params = CKKSParams(msg.uint("poly_modulus_degree"), chain, msg.uint("scale_bits"),
                            Backend(str(msg.values["backend"])), msg.uint("frac_bits"))
    except (ValueError, ConfigurationError) as exc:
        raise MalformedMessageError(f"invalid CKKS parameters: {exc}") from exc
    if not isinstance(secrets, ClientKeys):
        raise ConfigurationError("a CKKS client needs the federation's ClientKeys.")
    if secrets.key_id != msg.raw("key_id") or not _same_keys(secrets.params, params):
        raise ConfigurationError("the server's CKKS configuration is for another key or other "
                                 "parameters than this client's keys.")
    seed = msg.uint("rounding_seed") if "rounding_seed" in msg.values else None
    engine = _Engine(params, spec.length + 1, secrets, secrets.server_context(), workers)
    return _ClientProcess(spec, engine, seed)


class CKKSSecureSum:
    """CKKS encryption of client updates; the server only adds ciphertexts.

    Args:
        params: A preset (:data:`~privfl.he.params.COMPACT` by default, sized to the
            ``ValueSpec`` at :meth:`create`; :data:`~privfl.he.params.STANDARD` keeps its
            modulus and scale and gets the finest exact grid they allow).
        precision: Worst-case bound on the absolute error of every coordinate of the sum.
            ``None``: 1e-6 for COMPACT, the finest STANDARD can guarantee for the spec. A
            precision the parameters cannot deliver is refused at :meth:`create`.
        keys: The clients' keys; generated at :meth:`create` if not given (simulation:
            the driver provisions every client with the same key).
        server_context: For a deployed server: the key-less context of keys provisioned to
            the clients out of band (``keys.server_context()``); the server then never sees a
            key.
        workers: Processes that encrypt large vectors (≥ 64 ciphertexts) on a client;
            ``None`` uses the available CPUs, 1 keeps everything in-process. Decryption stays
            in-process: shipping the aggregate to workers cost more than it saved (measured,
            ``benchmarks/ckks.py``).
    """

    name = "ckks"

    def __init__(self, params: CKKSParams = COMPACT, *, precision: float | None = None,
                 keys: ClientKeys | None = None, workers: int | None = None,
                 rounding_seed: int | None = None,
                 server_context: ServerContext | None = None) -> None:
        if keys is not None and server_context is not None:
            raise ConfigurationError("give `keys` (simulation: this object provisions the "
                                     "clients) or `server_context` (a server), not both.")
        self.base = params
        self.precision = precision
        self.keys = keys
        self.server_context = server_context
        self.workers = default_workers() if workers is None else workers
        self.rounding_seed = rounding_seed
        self.params: CKKSParams | None = None

    def create(self, spec: ValueSpec) -> SecureSumProcess:
        """Size the parameters from ``spec`` (refusing overflow or < 128-bit security)."""
        params = derive_params(spec, precision=self.precision, base=self.base)
        if self.keys is not None and not _same_keys(self.keys.params, params):
            raise ConfigurationError(
                f"the given keys are for {self.keys.params}, but the spec needs {params}.")
        if self.server_context is not None:  # a deployed server: no key at all
            if not _same_keys(self.server_context.params, params):
                raise ConfigurationError(
                    f"the server context is for {self.server_context.params}, but the spec "
                    f"needs {params}. Tip: provision keys for derive_params(spec).")
            self.params = params
            return _Process(spec, params, self.server_context, self.rounding_seed)
        keys = self.keys or ClientKeys.generate(params)
        self.keys = keys  # this factory is the provisioner: it hands the keys to clients
        self.params = params
        return _Process(spec, params, keys.server_context(), self.rounding_seed)

    def client(self, config: bytes) -> _ClientProcess:
        """Simulation: a client side built from ``config`` and the keys this factory provisioned.

        A deployment provisions :attr:`keys` to the clients out of band and calls
        :func:`~privfl.core.securesum.client_process` on each.
        """
        if self.keys is None:
            raise ConfigurationError("no keys yet: call create() first or pass keys=.")
        return ckks_client(config, self.keys, self.workers)

    def client_secrets(self) -> ClientKeys | None:
        """What a simulated client is provisioned with (the shared keys)."""
        return self.keys

    def trust_assumption(self) -> TrustAssumption:
        """What CKKS protects, and what breaks it."""
        rotation = ("a fresh key every round, derived from the shared master seed" if
                    self.base.backend is Backend.COMPACT else "one key for the federation")
        return TrustAssumption(
            mechanism="ckks",
            server_sees=Visibility.CIPHERTEXT,
            statement="The server sees only CKKS ciphertexts of individual updates (128-bit "
                      "security) and the exact decrypted sum: decryptors release the sum "
                      "rounded to its grid, never the raw m + e from which the key could be "
                      f"solved (Li & Micciancio 2021); {rotation}. Clients learn the sum.",
            broken_by="any client colluding with the server (all clients share the secret "
                      "key); a malicious server that deviates from the protocol (for example "
                      "asking for the decryption of one client's upload) is out of scope",
            dropouts_tolerated="any number before upload, as long as one client uploads and one "
                               "decryptor answers",
        )


def _same_keys(a: CKKSParams, b: CKKSParams) -> bool:
    """Keys depend on the ring and modulus chain only, not on the grid."""
    return (a.poly_modulus_degree, a.coeff_mod_bit_sizes, a.backend) == \
        (b.poly_modulus_degree, b.coeff_mod_bit_sizes, b.backend)
