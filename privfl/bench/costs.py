"""What each privacy layer costs to run: time, bytes per client and server memory per round.

A costs cell builds the run of its RunConfig (any DP mode × any secure sum) and drives a few
rounds by hand, with every client in this process, timing both roles separately:

* **client seconds** — per client and round, split into local training (the client update)
  and protection (the stages' client halves, masking, encryption, key agreement, and encoding
  its messages);
* **server seconds** — per round: opening the round, folding in every reply, the secure sum's
  own stages and closing the round (unmasking, decryption, noise, optimizer);
* **bytes** — per client and round, up (client → server) and down (server → client, the model
  broadcast included);
* **server memory** — in one extra round under ``tracemalloc`` (which slows allocation, so it is
  not timed): the peak of Python and numpy allocations during the server's calls, above what was
  allocated when the round opened.

The first round is a warm-up (lazy imports, Opacus's first wrap, key set-up) and is not counted;
the figures are medians over the measured rounds. Ratios against the unprotected cell of the
same model come from the same suite run (:mod:`privfl.bench.tables`).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from privfl.core.history import RoundRecord
from privfl.errors import ProtocolAbortError

__all__ = ["run_costs"]

_WARMUP = 1


@dataclass
class _Clock:
    train: float = 0.0
    client: float = 0.0
    server: float = 0.0
    tracing: bool = False
    base: int = 0
    peak: int = 0

    def server_call(self, fn: Any, *args: Any) -> Any:
        if self.tracing:
            tracemalloc.reset_peak()
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.server += time.perf_counter() - t
            if self.tracing:
                self.peak = max(self.peak, tracemalloc.get_traced_memory()[1] - self.base)


@dataclass
class _TimedUpdate:
    """Forwards to the real client update, adding its training time to the clock."""

    inner: Any
    clock: _Clock

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def client_copy(self) -> _TimedUpdate:
        copy = getattr(self.inner, "client_copy", None)
        return _TimedUpdate(copy() if copy is not None else self.inner, self.clock)

    def train(self, *args: Any, **kwargs: Any) -> Any:
        t = time.perf_counter()
        try:
            return self.inner.train(*args, **kwargs)
        finally:
            self.clock.train += time.perf_counter() - t


@dataclass
class _TimedSession:
    """The server round, each call timed (and its allocation peak taken when tracing)."""

    inner: Any
    clock: _Clock
    round_id: int = field(init=False)

    def __post_init__(self) -> None:
        self.round_id = self.inner.round_id

    def step(self, replies: Iterable[tuple[int, bytes]]) -> Any:
        return self.clock.server_call(self.inner.step, replies)

    def receive(self, client: int, message: bytes) -> None:
        self.clock.server_call(self.inner.receive, client, message)


@dataclass
class _TimedPool:
    """The client pool, the time spent inside clients counted."""

    inner: Any
    clock: _Clock

    def exchange(self, requests: Sequence[tuple[int, bytes]]) -> Iterator[Any]:
        it = iter(self.inner.exchange(requests))
        while True:
            t = time.perf_counter()
            try:
                reply = next(it)
            except StopIteration:
                self.clock.client += time.perf_counter() - t
                return
            self.clock.client += time.perf_counter() - t
            yield reply

    def close(self) -> None:
        self.inner.close()


def _round(driver: Any, pool: _TimedPool, clock: _Clock, r: int) -> dict[str, float]:
    server = driver.server
    selected = server.sample(r)
    server.guard(r, selected)
    clock.train = clock.client = clock.server = 0.0
    t = time.perf_counter()
    session = _TimedSession(clock.server_call(server.open_round, r, selected), clock)
    try:
        outcome = driver.transport.run(session, pool)
    except ProtocolAbortError as exc:
        raise ProtocolAbortError(f"costs round {r}: {exc}") from exc
    record = RoundRecord(round_id=r, selected=list(selected))
    if not clock.server_call(server.close_round, r, outcome.result, record):
        raise ProtocolAbortError(f"costs round {r}: nothing was released")
    wall = time.perf_counter() - t
    n = max(1, len(selected))
    up = max(1, len(outcome.result.contributors))
    return {"wall_s": wall, "server_s": clock.server, "client_s": clock.client / n,
            "client_train_s": clock.train / n, "client_protect_s": (clock.client - clock.train) / n,
            "bytes_up_per_client": outcome.bytes_up / up,
            "bytes_down_per_client": outcome.bytes_down / n, "clients": len(selected)}


def run_costs(cfg: Any) -> dict[str, Any]:
    """Measure ``cfg.rounds`` rounds (the first a warm-up) and one traced round.

    The run is planned (and its DP calibrated) for the ``cfg.rounds + 1`` rounds it runs.
    """
    import dataclasses

    from privfl.experiment import build_run

    clock = _Clock()
    planned = dataclasses.replace(cfg, rounds=cfg.rounds + 1)
    driver, _ = build_run(planned, wrap_update=lambda u: _TimedUpdate(u, clock))
    pool = _TimedPool(driver.client_pool(), clock)
    try:
        rows = [_round(driver, pool, clock, r) for r in range(1, cfg.rounds + 1)]
        tracemalloc.start()
        try:
            clock.tracing, clock.peak = True, 0
            clock.base = tracemalloc.get_traced_memory()[0]
            _round(driver, pool, clock, cfg.rounds + 1)
        finally:
            clock.tracing = False
            tracemalloc.stop()
    finally:
        driver.close()
    measured = rows[_WARMUP:] or rows
    med: Mapping[str, float] = {k: statistics.median(r[k] for r in measured)
                                for k in measured[0]}
    return {"dim": driver.spec.dim, **med, "server_peak_bytes": clock.peak,
            "server_peak_bytes_per_param": clock.peak / driver.spec.dim,
            "rounds_measured": len(measured), "per_round": rows}
