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

import copy
import enum
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

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
        """Client roles for ``clients``, sharing one trainer (they run one at a time)."""
        trainer, secrets = self.trainer(), self.secrets()
        return {c: ClientRole(c, self.data.clients[c], trainer, secrets=secrets,
                              ledger=(self.ledger_template.empty_like()
                                      if self.ledger_template is not None else None),
                              seed=self.seed)
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

    def close(self) -> None:
        """Nothing to stop."""


_WORKER: dict[str, Any] = {}


def _init_worker(factory: ClientFactory, clients: Sequence[ClientId], threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER["roles"] = factory.roles(clients)


def _worker_batch(batch: list[tuple[ClientId, bytes]]) -> list[bytes | tuple[str, str]]:
    return [_answer(_WORKER["roles"], c, r) for c, r in batch]


class ProcessClients:
    """Client roles spread over ``workers`` processes; one exchange runs them in parallel.

    Each worker owns the clients ``c % workers == i`` for the whole run (their ledgers and
    protocol state stay there). An exchange sends each worker its requests as one batch; replies
    come back per worker and are yielded in request order.
    """

    def __init__(self, factory: ClientFactory, clients: Sequence[ClientId], workers: int,
                 threads_per_worker: int = 1) -> None:
        self.workers = max(1, workers)
        ctx = mp.get_context("spawn")
        self._pools = [
            ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_init_worker,
                                initargs=(factory, [c for c in clients
                                                    if c % self.workers == i],
                                          threads_per_worker))
            for i in range(self.workers)]

    def exchange(self, requests: Sequence[tuple[ClientId, bytes]]) -> Iterator[Reply]:
        """Dispatch per worker, then yield replies in request order."""
        batches: list[list[tuple[ClientId, bytes]]] = [[] for _ in range(self.workers)]
        for cid, req in requests:
            batches[cid % self.workers].append((cid, req))
        futures: dict[int, Future[list[bytes | tuple[str, str]]]] = {
            w: self._pools[w].submit(_worker_batch, b) for w, b in enumerate(batches) if b}
        results: dict[int, Iterator[bytes | tuple[str, str]]] = {}
        for cid, _ in requests:
            w = cid % self.workers
            if w not in results:
                results[w] = iter(futures[w].result())
            yield _as_reply(cid, next(results[w]))

    def close(self) -> None:
        """Stop the workers."""
        for pool in self._pools:
            pool.shutdown(wait=True, cancel_futures=True)


class RayClients:
    """Client roles spread over Ray actors (a local Ray instance unless one is running)."""

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
                _init_worker(factory, owned, 1)

            def batch(self, items: list[tuple[ClientId, bytes]]
                      ) -> list[bytes | tuple[str, str]]:
                return _worker_batch(items)

        self._ray = ray
        self._actors = [_Actor.remote(factory,  # type: ignore[attr-defined]
                                      [c for c in clients if c % self.workers == i])
                        for i in range(self.workers)]

    def exchange(self, requests: Sequence[tuple[ClientId, bytes]]) -> Iterator[Reply]:
        """Dispatch per actor, then yield replies in request order."""
        batches: list[list[tuple[ClientId, bytes]]] = [[] for _ in range(self.workers)]
        for cid, req in requests:
            batches[cid % self.workers].append((cid, req))
        refs = {w: self._actors[w].batch.remote(b) for w, b in enumerate(batches) if b}
        results: dict[int, Iterator[bytes | tuple[str, str]]] = {}
        for cid, _ in requests:
            w = cid % self.workers
            if w not in results:
                results[w] = iter(self._ray.get(refs[w]))
            yield _as_reply(cid, next(results[w]))

    def close(self) -> None:
        """Release the actors."""
        for a in self._actors:
            self._ray.kill(a)
