"""Whole-container PSS against models loaded, per server: sampled during the loads, drawn with matplotlib."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from bench.report import MB

if TYPE_CHECKING:
    from bench.servers import Server

Curve = list[list[float]]  # [[models loaded, PSS MB], ...]

STYLE = {  # one look per server across charts; unknown kinds fall back to matplotlib's cycle
    "ours": ("tab:blue", "o"), "vanilla": ("tab:red", "s"), "ours-fresh": ("tab:purple", "^"),
    "ours-hosts": ("tab:cyan", "P"),
    "mlserver": ("tab:green", "D"), "mlserver-inproc": ("tab:olive", "v"),
}


class PssCurve:
    """Samples the tree's PSS before every k-th load (k such that about 20 points cover the run).

    Its `sample(i)` has load_all's stop_when signature (called with i models loaded, before the next
    load, outside the load's timing) and never stops the loads. One quick pass, not the settled median.
    """

    def __init__(self, server: Server, n: int, points: int = 20) -> None:
        self.server, self.n = server, n
        self.every = max(1, n // points)
        self.points: Curve = []

    def sample(self, loaded: int) -> None:
        due = loaded % self.every == 0 or loaded == self.n
        if due and (not self.points or self.points[-1][0] != loaded):
            self.points.append([loaded, self.server.snapshot(settled=False).total / MB])
        return None


def median_curve(curves: Sequence[Curve]) -> Curve:
    """Per number of models loaded, the median PSS over the repeats that sampled it."""
    by_n: dict[float, list[float]] = {}
    for curve in curves:
        for n, mb in curve:
            by_n.setdefault(n, []).append(mb)
    return [[n, statistics.median(v)] for n, v in sorted(by_n.items())]


def write_chart(path: Path, curves: dict[str, Curve], title: str) -> None:
    """A PNG: one line per server, models loaded on x, whole-tree PSS in MB on y."""
    import matplotlib  # the dev extra: only --chart needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    for label, curve in curves.items():
        if not curve:
            continue
        xs, ys = zip(*curve, strict=True)
        color, marker = STYLE.get(label, (None, "o"))
        per_model = (ys[-1] - ys[0]) / xs[-1] if xs[-1] else 0.0
        ax.plot(xs, ys, marker=marker, markersize=4, color=color,
                label=f"{label}: {ys[-1]:.0f} MB at {xs[-1]:.0f} models (avg +{per_model:.1f} MB/model)")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("models loaded")
    ax.set_ylabel("whole-container PSS (MB, 10^6 bytes)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
