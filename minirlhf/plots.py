"""Figures, saved as PNG.

Figures are built with matplotlib's object-oriented ``Figure`` rather than ``pyplot``: that needs
no display and leaves the backend alone, so the library works on a headless machine and inside
notebooks alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from minirlhf.files import atomic_write


def _save(fig: Figure, path: Path) -> None:
    """The figure as a PNG at ``path``, atomically (and held with the stage's other files, see
    ``minirlhf.files.held_writes``)."""
    atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=100))


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
    _save(fig, path)
    return path


def plot_calibration(path: str | Path, cal: dict) -> Path:
    """Reliability diagram: predicted P(A > B) against the observed frequency, per bin."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.plot([0, 1], [0, 1], color="gray", ls="--", lw=1, label="perfect calibration")
    sizes = [20 + 200 * c / max(cal["counts"]) for c in cal["counts"]]
    ax.scatter(cal["predicted"], cal["observed"], s=sizes, zorder=3, label="held-out pairs")
    ax.plot(cal["predicted"], cal["observed"], lw=1)
    ax.set(xlabel="predicted P(A preferred)", ylabel="observed frequency",
           title=f"reward model calibration (ECE {cal['ece'][0]:.3f})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_reward_vs_kl(path: str | Path, curves: dict[str, dict[str, Sequence[float]]],
                      title: str = "gold and proxy reward against KL") -> Path:
    """One line per curve: x = KL to the reference, y = reward; each curve is a dict with keys
    ``kl``, ``gold`` and optionally ``proxy`` (drawn dashed), ``labels`` for the points, and
    ``gold_ci`` / ``kl_ci`` (one (low, high) per point, or None) drawn as error bars."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    for name, c in curves.items():
        line, = ax.plot(c["kl"], c["gold"], "o-", label=f"{name}: gold")
        for k, (x, y) in enumerate(zip(c["kl"], c["gold"], strict=True)):
            g = (c.get("gold_ci") or [None] * len(c["kl"]))[k]
            kx = (c.get("kl_ci") or [None] * len(c["kl"]))[k]
            if g is not None or kx is not None:
                ax.errorbar([x], [y], yerr=None if g is None else [[y - g[0]], [g[1] - y]],
                            xerr=None if kx is None else [[x - kx[0]], [kx[1] - x]],
                            fmt="none", ecolor=line.get_color(), capsize=3, lw=1)
        if "proxy" in c:
            ax.plot(c["kl"], c["proxy"], "s--", color=line.get_color(), alpha=0.6,
                    label=f"{name}: proxy (RM)")
        for x, y, lab in zip(c["kl"], c["gold"], c.get("labels", []), strict=False):
            ax.annotate(str(lab), (x, y), textcoords="offset points", xytext=(3, 4), fontsize=7)
    ax.set(xlabel="KL to the reference policy (nats per response)", ylabel="reward",
           title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_series(path: str | Path, series: dict[str, Sequence[tuple[float, float]]],
                title: str = "", ylabel: str = "") -> Path:
    """Several (step, value) series on one set of axes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6.5, 3.8))
    ax = fig.subplots()
    for name, points in series.items():
        if points:
            ax.plot(*zip(*points, strict=True), lw=1, label=name)
    ax.set(xlabel="step", ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path


def plot_points_with_intervals(path: str | Path, points: dict[str, dict[str, Sequence[float]]],
                               title: str) -> Path:
    """Gold against KL, one point per policy with its intervals as error bars. points: name ->
    {"kl": (mean, low, high), "gold": (mean, low, high)}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    for k, (name, p) in enumerate(points.items()):
        (x, x0, x1), (y, y0, y1) = p["kl"], p["gold"]
        ax.errorbar([x], [y], xerr=[[x - x0], [x1 - x]], yerr=[[y - y0], [y1 - y]], fmt="o",
                    color=f"C{k % 10}", capsize=3, label=name)
    ax.set(xlabel="KL to the SFT policy (nats per response)", ylabel="gold reward", title=title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    return path
