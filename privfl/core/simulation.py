"""Where simulated clients run: in this process, in worker processes, or in Ray actors.

The simulator is only a transport between the two roles (:mod:`privfl.core.roles`): it never
reaches into a client. Each pool owns the :class:`~privfl.core.roles.ClientRole` objects of the
clients assigned to it and answers ``(client, request bytes)`` with reply bytes; replies are
yielded in request order, one at a time, so the server role folds each into its O(d) running sum
and the driver's memory does not grow with the number of clients.

* :class:`SequentialClients` — every client in this process, one after another (the default).
* :class:`ProcessClients` — ``workers`` processes (``spawn``), each owning the clients
  ``c % workers == i``; requests of one exchange are dispatched to all workers at once and
  answered in parallel.
* :class:`RayClients` — the same over Ray actors (``pip install privfl[flower]`` brings Ray), on
  one machine or a Ray cluster.

Workers are built from a :class:`ClientFactory`: the federated data, the model, a client-side
copy of the client update, the provisioned secrets (exported deliberately for this in-machine
IPC, as the CKKS chunk pool does) and the seeds. The factory travels to our own worker processes,
never across a trust boundary; messages between the roles stay privfl wire bytes.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from privfl.core import wire
from privfl.core.roles import ClientRole, Trainer
from privfl.core.spec import ClientId
from privfl.core.transport import Reply
from privfl.errors import (
    ClientRefusedError,
    MalformedMessageError,
    PrivflError,
    ProtocolViolationError,
)

__all__ = ["ClientFactory", "Execution", "ProcessClients", "RayClients", "SequentialClients"]


class Execution(enum.Enum):
    """Where the simulated clients run."""

    SEQUENTIAL = "sequential"
    """In this process, one after another."""
    PROCESSES = "processes"
    """In worker processes, in parallel (one per core by default)."""
    RAY = "ray"
    """In Ray actors (needs Ray: ``pip install privfl[flower]``)."""
    AUTO = "auto"
    """Ray when it is installed, worker processes otherwise."""

_ERRORS: dict[str, type[PrivflError]] = {
    "ClientRefusedError": ClientRefusedError,
    "MalformedMessageError": MalformedMessageError,
    "ProtocolViolationError": ProtocolViolationError,
}


@dataclass
class ClientFactory:
    """Everything needed to build client roles anywhere (picklable, for our own workers).

    Attributes:
        data: The federated data set (each role gets its own client's part).
        model: The model architecture (each worker trains its own copy).
        client_update: A client-side copy of the client update (no server references).
        exported_secrets: Provisioned secrets in exported form (CKKS parameters and the
            exported key), or ``None``; what a worker process rebuilds its keys from.
        ledger_template: Settings of each client's own example-level ledger, or ``None``.
        seed: Simulation seed of local training, or ``None`` for fresh randomness.
    """

    data: Any
    model: Any
    client_update: Any
    exported_secrets: tuple[Any, bytes] | None = None
    ledger_template: Any = None
    seed: int | None = None
    secrets_object: object | None = None
    """In-process only (never pickled to a worker): the secrets object itself."""

    def trainer(self) -> Trainer:
        """A trainer with its own copy of the model."""
        from privfl.core.params import ParamSpec

        model = copy.deepcopy(self.model)
        return Trainer(model, ParamSpec.from_module(model), self.client_update)

    def secrets(self) -> object | None:
        """The provisioned secrets, rebuilt from their export."""
        if self.secrets_object is not None:
            return self.secrets_object
        if self.exported_secrets is None:
            return None
        from privfl.he.keys import ClientKeys

        params, blob = self.exported_secrets
        return ClientKeys.from_export(params, blob)

    def roles(self, clients: Sequence[ClientId]) -> dict[ClientId, ClientRole]:
        """Client roles for ``clients``.

        They share one trainer (they run one at a time) and the cache of decoded
        configurations.
        """
        trainer, secrets = self.trainer(), self.secrets()
        shared: dict[bytes, Any] = {}  # one decoded configuration for all (same secrets)
        return {c: ClientRole(c, self.data.clients[c], trainer, secrets=secrets,
                              ledger=(self.ledger_template.empty_like()
                                      if self.ledger_template is not None else None),
                              seed=self.seed, cache=shared)
                for c in clients}


def _answer(roles: dict[ClientId, ClientRole], client: ClientId, request: bytes
            ) -> bytes | tuple[str, str]:
    role = roles.get(client)
    if role is None:
        return ("ProtocolViolationError", f"no such client {client}")
    try:
        return role.handle(request)
    except (ClientRefusedError, MalformedMessageError, ProtocolViolationError) as exc:
        # what a real client's failure looks like to the server: it is excluded. Anything
        # else (a ConfigurationError: the model cannot be trained) stops the simulation.
        kind = next(n for n, t in _ERRORS.items() if isinstance(exc, t))
        return (kind, f"{type(exc).__name__}: {exc}")


def _as_reply(client: ClientId, out: bytes | tuple[str, str]) -> Reply:
    if isinstance(out, tuple):
        return client, _ERRORS[out[0]](out[1])
    return client, out


class SequentialClients:
    """Every client role in this process; requests are answered one after another."""

    def __init__(self, factory: ClientFactory, clients: Sequence[ClientId]) -> None:
        self.roles = factory.roles(clients)

    def exchange(self, requests: Sequence[tuple[ClientId, bytes]]) -> Iterator[Reply]:
        """Answer each request in turn."""
        for cid, request in requests:
            yield _as_reply(cid, _answer(self.roles, cid, request))

    def client_states(self) -> dict[ClientId, dict[str, Any]]:
        """Every client's checkpoint state (:meth:`ClientRole.state_dict`)."""
        return {c: r.state_dict() for c, r in self.roles.items()}

    def load_client_states(self, states: dict[ClientId, Any]) -> None:
        """Restore :meth:`client_states` (every client of the pool must be present)."""
        _load_states(self.roles, states)

    def close(self) -> None:
        """Nothing to stop."""


_BATCH = wire.Schema(kind=54, name="worker.batch", fields=(
    wire.Field(1, "clients", wire.FieldType.ARRAY, dtype="<u4"),
    wire.Field(2, "request_index", wire.FieldType.ARRAY, dtype="<u4"),
    wire.Field(3, "requests", wire.FieldType.BYTES)))
_STATES = wire.Schema(kind=55, name="worker.states", fields=(
    wire.Field(1, "load", wire.FieldType.UINT, max_uint=1),
    wire.Field(2, "states", wire.FieldType.BYTES)))
"""Driver ↔ worker: export (load = 0) or load (load = 1) the clients' checkpoint states, as JSON."""


def _load_states(roles: dict[ClientId, ClientRole], states: Any) -> None:
    from privfl.errors import CheckpointError

    if not isinstance(states, dict) or set(states) != set(roles):
        raise CheckpointError("the checkpoint's clients differ from this run's clients")
    for c, role in roles.items():
        role.load_state_dict(states[c])


def _states_json(roles: dict[ClientId, ClientRole]) -> bytes:
    from privfl._json import dumps

    return dumps({str(c): r.state_dict() for c, r in roles.items()}).encode()


def _states_from_json(raw: bytes) -> dict[ClientId, Any]:
    import json

    return {int(k): v for k, v in json.loads(raw).items()}


def _serve(conn: Any, factory: ClientFactory, clients: list[ClientId], threads: int) -> None:
    """A worker process: own ``clients``' roles; answer batches, streaming one reply each."""
    import signal

    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's: it ends the run
    torch.set_num_threads(threads)
    roles = factory.roles(clients)
    while True:
        batch = conn.recv_bytes()
        if not batch:
            return
        if wire.peek_kind(batch) == _STATES.kind:
            ctl = wire.decode(batch, _STATES)
            try:
                if ctl.uint("load"):
                    _load_states(roles, {c: s for c, s in
                                         _states_from_json(ctl.raw("states")).items()})
                    conn.send_bytes(b"\x00")
                else:
                    conn.send_bytes(b"\x00" + _states_json(roles))
            except PrivflError as exc:
                conn.send_bytes(b"\x01" + f"{type(exc).__name__}: {exc}".encode())
            continue
        msg = wire.decode(batch, _BATCH)
        distinct = wire.unpack_blobs(msg.raw("requests"), max_items=1 << 20)
        for cid, k in zip(msg.array("clients"), msg.array("request_index"), strict=True):
            out = _answer(roles, int(cid), distinct[int(k)])
            if isinstance(out, bytes):
                conn.send_bytes(b"\x00" + out)
            else:
                conn.send_bytes(b"\x01" + f"{out[0]}|{out[1]}".encode())


class ProcessClients:
    """Client roles spread over ``workers`` processes; one exchange runs them in parallel.

    Each worker owns the clients ``c % workers == i`` for the whole run (their ledgers and
    protocol state stay there). An exchange sends each worker its requests in one batch (a
    request shared by many clients, like ``round.start``, travels once); the worker streams its
    replies back one at a time over a pipe, and a reader thread per worker keeps at most two of
    them waiting, so the driver holds O(workers · d) bytes, never O(n · d).
    """

    def __init__(self, factory: ClientFactory, clients: Sequence[ClientId], workers: int,
                 threads_per_worker: int = 1) -> None:
        self.workers = max(1, workers)
        ctx = mp.get_context("spawn")
        self._conns = []
        self._procs = []
        for i in range(self.workers):
            parent, child = ctx.Pipe()
            owned = [c for c in clients if c % self.workers == i]
            proc = ctx.Process(target=_serve, args=(child, factory, owned, threads_per_worker),
                               daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)

    def exchange(self, requests: Sequence[tuple[ClientId, bytes]]) -> Iterator[Reply]:
        """Dispatch per worker; yield replies in request order as they stream in."""
        import queue
        import threading

        per: list[list[tuple[ClientId, int]]] = [[] for _ in range(self.workers)]
        distinct: list[dict[int, int]] = [{} for _ in range(self.workers)]  # id -> index
        blobs: list[list[bytes]] = [[] for _ in range(self.workers)]
        for cid, req in requests:
            w = cid % self.workers
            k = distinct[w].get(id(req))
            if k is None:
                k = distinct[w][id(req)] = len(blobs[w])
                blobs[w].append(req)
            per[w].append((cid, k))
        queues: list[queue.Queue[bytes]] = [queue.Queue(maxsize=2) for _ in range(self.workers)]

        def read(w: int) -> None:
            for _ in per[w]:
                queues[w].put(self._conns[w].recv_bytes())

        readers = []
        for w in range(self.workers):
            if per[w]:
                self._conns[w].send_bytes(wire.encode(_BATCH, 0, {
                    "clients": np.array([c for c, _ in per[w]], "<u4"),
                    "request_index": np.array([k for _, k in per[w]], "<u4"),
                    "requests": wire.pack_blobs(blobs[w])}))
                t = threading.Thread(target=read, args=(w,), daemon=True)
                t.start()
                readers.append(t)
        for cid, _ in requests:
            raw = queues[cid % self.workers].get()
            if raw[:1] == b"\x00":
                yield cid, raw[1:]
            else:
                kind, _, text = raw[1:].decode().partition("|")
                yield cid, _ERRORS[kind](text)
        for t in readers:
            t.join()

    def _control(self, w: int, load: bool, states: bytes = b"") -> bytes:
        from privfl.errors import CheckpointError

        self._conns[w].send_bytes(wire.encode(_STATES, 0, {"load": int(load),
                                                           "states": states}))
        out = self._conns[w].recv_bytes()
        if out[:1] != b"\x00":
            raise CheckpointError(f"worker {w}: {out[1:].decode(errors='replace')}")
        return out[1:]

    def client_states(self) -> dict[ClientId, dict[str, Any]]:
        """Every client's checkpoint state, collected from the workers that own them."""
        out: dict[ClientId, dict[str, Any]] = {}
        for w in range(self.workers):
            out.update(_states_from_json(self._control(w, load=False)))
        return out

    def load_client_states(self, states: dict[ClientId, Any]) -> None:
        """Send each worker its clients' checkpoint states."""
        from privfl._json import dumps

        for w in range(self.workers):
            mine = {str(c): s for c, s in states.items() if c % self.workers == w}
            self._control(w, load=True, states=dumps(mine).encode())

    def close(self) -> None:
        """Stop the workers."""
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send_bytes(b"")
        for proc in self._procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
        self._conns, self._procs = [], []


class RayClients:
    """Client roles spread over Ray actors (a local Ray instance unless one is running).

    A request shared by many clients is put in Ray's object store once; each client is one
    remote call, at most ``2 · workers`` in flight, consumed in request order: the driver holds
    O(workers · d) bytes whatever the number of clients.
    """

    def __init__(self, factory: ClientFactory, clients: Sequence[ClientId], workers: int,
                 address: str | None = None) -> None:
        import os

        import ray

        os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     num_cpus=None if address else workers)
        self.workers = max(1, workers)

        @ray.remote(num_cpus=1)
        class _Actor:
            def __init__(self, factory: ClientFactory, owned: list[ClientId]) -> None:
                import torch

                torch.set_num_threads(1)
                self.roles = factory.roles(owned)

            def handle(self, client: ClientId, request: bytes) -> bytes | tuple[str, str]:
                return _answer(self.roles, client, request)

            def states(self) -> bytes:
                return _states_json(self.roles)

            def load_states(self, raw: bytes) -> None:
                _load_states(self.roles, _states_from_json(raw))

        self._ray = ray
        self._actors = [_Actor.remote(factory,  # type: ignore[attr-defined]
                                      [c for c in clients if c % self.workers == i])
                        for i in range(self.workers)]

    def exchange(self, requests: Sequence[tuple[ClientId, bytes]]) -> Iterator[Reply]:
        """One remote call per client, a bounded window in flight, replies in request order."""
        refs: dict[int, Any] = {}
        pending: list[tuple[ClientId, Any]] = []
        it = iter(requests)
        window = 2 * self.workers

        def submit() -> bool:
            nxt = next(it, None)
            if nxt is None:
                return False
            cid, req = nxt
            ref = refs.get(id(req))
            if ref is None:
                ref = refs[id(req)] = self._ray.put(req)
            pending.append((cid, self._actors[cid % self.workers].handle.remote(cid, ref)))
            return True

        while len(pending) < window and submit():
            pass
        while pending:
            cid, fut = pending.pop(0)
            out = self._ray.get(fut)
            submit()
            yield _as_reply(cid, out)

    def client_states(self) -> dict[ClientId, dict[str, Any]]:
        """Every client's checkpoint state, collected from the actors that own them."""
        out: dict[ClientId, dict[str, Any]] = {}
        for raw in self._ray.get([a.states.remote() for a in self._actors]):
            out.update(_states_from_json(raw))
        return out

    def load_client_states(self, states: dict[ClientId, Any]) -> None:
        """Send each actor its clients' checkpoint states."""
        from privfl._json import dumps

        refs = []
        for w, a in enumerate(self._actors):
            mine = {str(c): s for c, s in states.items() if c % self.workers == w}
            refs.append(a.load_states.remote(dumps(mine).encode()))
        self._ray.get(refs)

    def close(self) -> None:
        """Release the actors."""
        for a in self._actors:
            self._ray.kill(a)
