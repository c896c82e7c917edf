"""PNG plots of a run (matplotlib, headless Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

from privfl.core.history import History

__all__ = ["plot_history"]


def plot_history(history: History, path: str | Path, *, title: str = "") -> Path:
    """Plot test accuracy and test/train loss per round into ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = [0] + [r.round_id for r in history.rounds]
    acc = [history.initial_accuracy] + [r.test_accuracy for r in history.rounds]
    loss = [history.initial_loss] + [r.test_loss for r in history.rounds]
    train = [math.nan] + [r.train_loss for r in history.rounds]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ax1.plot(rounds, acc, marker=".", color="tab:blue")
    ax1.set(xlabel="round", ylabel="test accuracy", ylim=(0, 1), title="Accuracy")
    ax1.grid(alpha=0.3)
    ax2.plot(rounds, loss, marker=".", label="test loss", color="tab:red")
    ax2.plot(rounds, train, marker=".", label="train loss (clients)", color="tab:orange")
    ax2.set(xlabel="round", ylabel="cross-entropy", title="Loss")
    ax2.grid(alpha=0.3)
    ax2.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
