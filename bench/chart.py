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

    def slope(self) -> float | None:
        """MB per model from the first sample with a model loaded to the last (None: under two such)."""
        loaded = [p for p in self.points if p[0] >= 1]
        if len(loaded) < 2 or loaded[-1][0] == loaded[0][0]:
            return None
        return (loaded[-1][1] - loaded[0][1]) / (loaded[-1][0] - loaded[0][0])

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


ZOOM_RATIO = 4  # a server ending this many times above the densest one squashes the rest: a zoomed panel


def write_chart(path: Path, curves: dict[str, Curve], title: str) -> None:
    """A PNG: one line per server, models loaded on x, whole-tree PSS in MB on y. When some server ends far
    above the others (vanilla MMS: ~100 MB per model against ~1), a second panel shows the others alone, on
    a scale where their slopes can be read."""
    import matplotlib  # the dev extra: only --chart needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = {label: curve for label, curve in curves.items() if curve}
    finals = {label: curve[-1][1] for label, curve in drawn.items()}
    dense = {label: curve for label, curve in drawn.items()
             if finals and finals[label] <= ZOOM_RATIO * min(finals.values())}
    zoom = 0 < len(dense) < len(drawn)
    fig, axes = plt.subplots(1, 2 if zoom else 1, figsize=(15 if zoom else 9, 5.5), dpi=120, squeeze=False)
    _panel(axes[0][0], drawn, "every server")
    if zoom:
        _panel(axes[0][1], dense, f"zoomed: the servers within {ZOOM_RATIO}x of the densest")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def _panel(ax: object, curves: dict[str, Curve], subtitle: str) -> None:
    from matplotlib.ticker import MaxNLocator

    for label, curve in curves.items():
        xs, ys = zip(*curve, strict=True)
        color, marker = STYLE.get(label, (None, "o"))
        per_model = (ys[-1] - ys[0]) / xs[-1] if xs[-1] else 0.0
        ax.plot(xs, ys, marker=marker, markersize=4, color=color,
                label=f"{label}: {ys[-1]:.0f} MB at {xs[-1]:.0f} models (avg +{per_model:.1f} MB/model)")
    ax.set_title(subtitle, fontsize=10)
    ax.set_xlabel("models loaded")
    ax.set_ylabel("whole-container PSS (MB, 10^6 bytes)")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=9)
