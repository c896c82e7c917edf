"""Durable runs: a checkpoint after every round, Ctrl-C that keeps the work, and resume.

After every round ``privfl run`` writes ``checkpoint.ckpt`` in its run directory (atomically;
the format is :mod:`privfl.core.checkpoint`): the global model, the server optimizer's moments,
the seeded generators' positions (client sampling, central noise, dropouts), the adaptive clip
norm, every privacy ledger — the server's and each client's own — the audit's running
statistics and the history so far. Secrets are not in it: a resumed run provisions fresh keys
(CKKS keys, SecAgg identities), which is sound because no ciphertext or mask outlives its round.

Ctrl-C (:class:`GracefulInterrupt`): the first press lets the current round finish, then the
run stops, writes its history, plots and privacy report so far, records ``interrupted`` in
``status.json`` and says how to resume; a second press abandons the round at once. Clients that
trained in an abandoned round have charged their ledgers, and those charges are kept in the
checkpoint (with in-process clients; with worker processes they cannot be collected mid-round,
and then a run that keeps client ledgers refuses to resume rather than spend them twice).

Resume (:func:`restore`): the run is rebuilt from its ``config.toml`` and the checkpoint is
loaded into it; a checkpoint of another configuration is refused. With seeded randomness
(``secure_randomness = false``) a resumed run on the CPU ends bit-identical to one that was
never interrupted, with the same ε. With the CSPRNG (the default) it continues with fresh OS
randomness — as the privacy analysis requires — and its ledgers carry every ε already spent: a
budget is never spent twice.
"""

from __future__ import annotations

import hashlib
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from privfl.core.checkpoint import load_state, require, save_state
from privfl.errors import CheckpointError

__all__ = ["CHECKPOINT", "GracefulInterrupt", "RunInterrupted", "abandon", "capture",
           "config_digest", "restore", "write"]

CHECKPOINT = "checkpoint.ckpt"
"""The checkpoint's file name inside a run directory."""


class RunInterrupted(KeyboardInterrupt):
    """A run stopped by Ctrl-C after writing what it had done.

    Attributes:
        run_dir: Its run directory (``privfl run --resume`` takes it).
        rounds_done: Rounds completed and checkpointed.
        resumable: Whether ``--resume`` can continue it.
    """

    def __init__(self, run_dir: Path, rounds_done: int, planned: int, resumable: bool) -> None:
        self.run_dir, self.rounds_done, self.resumable = run_dir, rounds_done, resumable
        tail = (f"resume with: privfl run --resume {run_dir}" if resumable else
                "it cannot be resumed (see status.json)")
        super().__init__(f"interrupted after round {rounds_done} of {planned}; its history and "
                         f"privacy report so far are in {run_dir}; {tail}")


class GracefulInterrupt:
    """While active, the first SIGINT asks the run to stop after this round; the second aborts.

    Only the main thread can own signal handlers: elsewhere this does nothing and Ctrl-C raises
    ``KeyboardInterrupt`` as usual.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._active = False

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._active = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self._active:
            signal.signal(signal.SIGINT, self._previous)
            self._active = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print("privfl: stopping after this round (Ctrl-C again to abandon it)",
              file=sys.stderr, flush=True)


def config_digest(config_toml: str) -> str:
    """SHA-256 of a run's resolved ``config.toml``: a checkpoint belongs to one configuration."""
    return hashlib.sha256(config_toml.encode()).hexdigest()


def capture(driver: Any, history: Any, plan: Any, digest: str) -> dict[str, Any]:
    """The state tree of a run at a round boundary."""
    return {"config_sha256": digest, "rounds_done": len(history.rounds),
            "history": history.to_dict(), "run": driver.state_dict(),
            "audit": None if plan is None else plan.state_dict(), "abandoned": None}


def write(run_dir: Path, tree: dict[str, Any]) -> None:
    """Write ``tree`` as the run directory's checkpoint (atomically)."""
    save_state(run_dir / CHECKPOINT, tree)


def abandon(run_dir: Path, last: dict[str, Any] | None, driver: Any) -> bool:
    """After an abandoned round: keep its charges in the checkpoint; ``True`` if resumable.

    The checkpoint keeps the last completed round's state, with the ledgers as they are now.
    Without them (clients in other processes, mid-exchange) a run whose clients keep ledgers
    is marked not resumable: resuming could spend their budget twice.
    """
    if last is None:
        return False
    round_id, charges = driver.abandoned if driver.abandoned else (None, None)
    tree = dict(last)
    keeps_client_ledgers = any(st.get("ledger") is not None
                               for st in last["run"]["clients"].values())
    if round_id is not None:
        if charges is not None:
            run = dict(tree["run"])
            run["ledgers"] = charges["ledgers"]
            clients = {}
            for cid, st in charges["clients"].items():
                # the ledger as it is now; the last round answered as at the boundary
                before = last["run"]["clients"].get(cid, st)
                clients[cid] = {**st, "last_round": before["last_round"]}
            run["clients"] = clients
            tree["run"] = run
        elif keeps_client_ledgers:
            tree["abandoned"] = {"round": round_id, "resumable": False}
            write(run_dir, tree)
            return False
        tree["abandoned"] = {"round": round_id, "resumable": True}
    write(run_dir, tree)
    return True


def restore(run_dir: Path, driver: Any, plan: Any, digest: str) -> tuple[Any, str | None]:
    """Load the run directory's checkpoint into a freshly built run.

    Returns:
        The history so far, and a note for the privacy report if a round was abandoned.

    Raises:
        CheckpointError: No checkpoint, a damaged one, one of another configuration, or one
            that could not keep an abandoned round's charges.
    """
    from privfl.core.history import History

    path = run_dir / CHECKPOINT
    if not path.exists():
        raise CheckpointError(f"{str(run_dir)!r} has no {CHECKPOINT}: the run ended before its "
                              "first round, or was written by a privfl without checkpoints")
    tree = load_state(path)
    if require(tree, "config_sha256", str) != digest:
        raise CheckpointError(f"the checkpoint in {str(run_dir)!r} belongs to another "
                              "configuration (its config.toml was changed)")
    abandoned = require(tree, "abandoned", (dict, type(None)))
    note = None
    if abandoned is not None:
        if not abandoned.get("resumable"):
            raise CheckpointError(
                f"round {abandoned.get('round')} of this run was abandoned while clients in "
                "worker processes were training; their ledgers could not be saved, so resuming "
                "could spend their privacy budget twice")
        note = (f"Round {abandoned['round']} was abandoned (Ctrl-C twice) and run again on "
                "resume; the ledgers keep what clients spent in the abandoned attempt, so ε "
                "is at least that of an uninterrupted run.")
    try:
        history = History.from_dict(require(tree, "history", dict))
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed history in the checkpoint: {exc!r}") from exc
    if len(history.rounds) != require(tree, "rounds_done", int):
        raise CheckpointError("the checkpoint's history and round count disagree")
    driver.load_state_dict(require(tree, "run", dict))
    if plan is not None:
        plan.load_state_dict(require(tree, "audit", dict))
    return history, note
