"""The replay's chart (PNG): hit rate and p99 latency over the trace's time, overall and per instance."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sklearn_mme.harness.replay import Sent

BINS = 30


def _series(sent: list[Sent], edges: np.ndarray) -> tuple[list[float], list[float]]:
    """Per time bin: hit rate (%) of answered requests and p99 latency (ms); NaN where a bin is empty."""
    hit_rate, p99 = [], []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = [s for s in sent if lo <= s.at < hi or (hi == edges[-1] and s.at == hi)]
        answered = [s for s in inside if s.ok]
        hit_rate.append(100 * sum(s.cache == "hit" for s in answered) / len(answered) if answered else np.nan)
        p99.append(float(np.percentile([s.seconds for s in answered], 99)) * 1000 if answered else np.nan)
    return hit_rate, p99


def draw(sent: list[Sent], path: Path, title: str) -> Path:
    """Write the chart to `path` (PNG) and return it."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    end = max((s.at for s in sent), default=0.0)
    edges = np.linspace(0.0, end or 1.0, BINS + 1)
    centres = (edges[:-1] + edges[1:]) / 2
    fig, (ax_hit, ax_p99) = plt.subplots(2, 1, sharex=True, figsize=(9, 6))
    groups = {"all": sent}
    instances = sorted({s.instance for s in sent if s.instance}, key=lambda x: (len(x), x))
    if 1 < len(instances) <= 8:
        groups.update({f"instance {i}": [s for s in sent if s.instance == i] for i in instances})
    for name, group in groups.items():
        hit_rate, p99 = _series(group, edges)
        style = {"linewidth": 2.2, "color": "black"} if name == "all" else {"linewidth": 1, "alpha": 0.7}
        ax_hit.plot(centres, hit_rate, label=name, **style)
        ax_p99.plot(centres, p99, label=name, **style)
    ax_hit.set_ylabel("hit rate (%)")
    ax_hit.set_ylim(0, 105)
    ax_hit.legend(fontsize="small", loc="lower right")
    ax_p99.set_ylabel("p99 latency (ms)")
    ax_p99.set_xlabel("trace time (s)")
    ax_hit.set_title(title)
    for ax in (ax_hit, ax_p99):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path
