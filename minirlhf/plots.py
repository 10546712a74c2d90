"""Figures, saved as PNG.

Figures are built with matplotlib's object-oriented ``Figure`` rather than ``pyplot``: that needs
no display and leaves the backend alone, so the library works on a headless machine and inside
notebooks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure


def plot_loss_curves(path: str | Path, train: Sequence[tuple[int, float]],
                     val: Sequence[tuple[int, float]], floor: float | None = None,
                     title: str = "loss") -> Path:
    """Train and validation loss against step; ``floor`` draws the best possible loss."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    if train:
        ax.plot(*zip(*train, strict=True), lw=1, alpha=0.7, label="train")
    if val:
        ax.plot(*zip(*val, strict=True), "o-", ms=3, label="validation")
    if floor is not None:
        ax.axhline(floor, color="gray", ls="--", lw=1, label=f"best possible {floor:.3f}")
    ax.set(xlabel="step", ylabel="nats per token", title=title)
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
