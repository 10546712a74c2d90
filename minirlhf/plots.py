"""Figures, saved as PNG. matplotlib runs without a screen (the Agg backend)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def plot_loss_curves(path: str | Path, train: Sequence[tuple[int, float]],
                     val: Sequence[tuple[int, float]], floor: float | None = None,
                     title: str = "loss") -> Path:
    """Train and validation loss against step; ``floor`` draws the best possible loss."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, alpha=0.7, label="train")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, label="validation")
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=1, label=f"corpus entropy {floor:.3f}")
    ax.set(xlabel="step", ylabel="nats per token", title=title)
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
