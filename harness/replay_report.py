"""The report of a replay: per-model and per-instance rows, the table printed, and the summary `size` uses.

Requests, hits, misses and latencies are the client's (each answer's X-Mme-Cache / X-Mme-Instance); loads and
evictions come from the harness's /metrics, the instances' 507s from their containers' /metrics. Hit rate is
hits over answered requests. Latency is the client's, send to answer, load waits included.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sklearn_mme.harness.replay import ReplayResult, Sent

_EVICTION_REASONS = ("lru", "507")  # unloads to make room; "lost" (a dead container) and "admin" are not


@dataclass
class Row:
    name: str
    requests: int = 0
    errors: int = 0
    hits: int = 0
    misses: int = 0
    loads: int = 0
    evictions: int = 0
    no_room: int = 0  # 507s: client-visible for a model, the container's answers for an instance
    latencies: list[float] = field(default_factory=list)

    def add(self, s: Sent) -> None:
        self.requests += 1
        if not s.ok:
            self.errors += 1
            self.no_room += s.original_status == 507
            return
        self.latencies.append(s.seconds)
        self.hits += s.cache == "hit"
        self.misses += s.cache != "hit"

    @property
    def hit_rate(self) -> float | None:
        answered = self.hits + self.misses
        return self.hits / answered if answered else None

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.latencies, q)) * 1000 if self.latencies else None


@dataclass
class ReplayReport:
    result: ReplayResult
    models: dict[str, Row]
    instances: dict[str, Row]
    total: Row

    @property
    def max_lag(self) -> float:
        return max((s.lag for s in self.result.sent), default=0.0)


def build(result: ReplayResult) -> ReplayReport:
    models: dict[str, Row] = {}
    instances: dict[str, Row] = {}
    total = Row("TOTAL")
    for s in result.sent:
        models.setdefault(s.model, Row(s.model)).add(s)
        if s.instance:
            instances.setdefault(s.instance, Row(f"instance {s.instance}")).add(s)
        total.add(s)
    labels = {dict(lbl).get("instance") for (_name, lbl) in result.after} - {None, "all"}
    for inst in sorted(labels, key=lambda x: int(x) if x and x.isdigit() else 0):
        assert inst is not None
        row = instances.setdefault(inst, Row(f"instance {inst}"))
        row.loads = int(result.delta("mme_model_loading_seconds_count", instance=inst))
        row.evictions = sum(int(result.delta("mme_model_unload_total", instance=inst, reason=r))
                            for r in _EVICTION_REASONS)
        row.no_room = int(result.delta("mme_container_insufficient_memory_total", instance=inst))
    scope = {"instance": "all"} if labels else {}  # a one-instance harness has no instance label
    for name, row in models.items():
        row.loads = int(result.delta("mme_model_loading_seconds_count", model=name, **scope))
        row.evictions = sum(int(result.delta("mme_model_unload_total", model=name, reason=r, **scope))
                            for r in _EVICTION_REASONS)
    total.loads = sum(r.loads for r in models.values())
    total.evictions = sum(r.evictions for r in models.values())
    total.no_room = sum(r.no_room for r in instances.values()) if instances else total.no_room
    ordered = dict(sorted(models.items(), key=lambda kv: (-kv[1].requests, kv[0])))
    return ReplayReport(result, ordered, dict(sorted(instances.items())), total)


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _line(row: Row) -> tuple[str, ...]:
    rate = row.hit_rate
    return (row.name, str(row.requests), str(row.errors), _fmt(None if rate is None else 100 * rate, ".1f"),
            str(row.loads), str(row.evictions), str(row.no_room),
            _fmt(row.percentile_ms(50), ".1f"), _fmt(row.percentile_ms(99), ".1f"))


def table(report: ReplayReport, top: int = 15) -> str:
    """Per-instance rows, the busiest `top` models, and the total."""
    header = ("", "reqs", "errors", "hit %", "loads", "evicted", "507", "p50 ms", "p99 ms")
    rows = [_line(r) for r in report.instances.values()]
    models = list(report.models.values())
    rows += [_line(r) for r in models[:top]]
    if len(models) > top:
        rows.append((f"... {len(models) - top} more models", *("",) * 8))
    rows.append(_line(report.total))
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def fmt(r: tuple[str, ...]) -> str:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True))]
        return "  ".join(cells)

    lines = [fmt(r) for r in [header, *rows]]
    res = report.result
    lines.append(
        f"{len(res.sent)} requests in {res.seconds:.1f}s at {res.speed:g}x the trace's pace "
        f"(at most {report.max_lag * 1000:.0f} ms behind schedule). 507: the containers' no-room answers per "
        "instance, 507s the client got per model."
    )
    return "\n".join(lines)
