"""The report of a scenario session: each request's outcome, per-model rows and the table printed."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Outcome:
    model: str
    ok: bool
    seconds: float
    cache: str = ""  # hit / miss from X-Mme-Cache
    wait_ms: float = 0.0
    body: bytes = b""
    error: str = ""


@dataclass
class ModelRow:
    model: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    hits: int = 0
    misses: int = 0
    downloads: int = 0
    loads: int = 0
    unloads: int = 0
    load_seconds: float = 0.0
    wait_seconds_max: float = 0.0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Report:
    rows: dict[str, ModelRow]
    outcomes: list[Outcome]
    seconds: float
    max_loaded: int

    @property
    def totals(self) -> ModelRow:
        total = ModelRow("TOTAL")
        for row in self.rows.values():
            for name in ("requests", "ok", "errors", "hits", "misses", "downloads", "loads", "unloads"):
                setattr(total, name, getattr(total, name) + getattr(row, name))
            total.load_seconds += row.load_seconds
            total.wait_seconds_max = max(total.wait_seconds_max, row.wait_seconds_max)
            total.latencies.extend(row.latencies)
        return total

    def table(self) -> str:
        header = (
            "model",
            "reqs",
            "ok",
            "err",
            "hits",
            "misses",
            "dl",
            "loads",
            "unloads",
            "load ms/ea",
            "max wait ms",
            "p50 ms",
            "max ms",
        )
        lines = []
        for row in [*self.rows.values(), self.totals]:
            lat = sorted(row.latencies)
            lines.append(
                (
                    row.model,
                    row.requests,
                    row.ok,
                    row.errors,
                    row.hits,
                    row.misses,
                    row.downloads,
                    row.loads,
                    row.unloads,
                    f"{1000 * row.load_seconds / row.loads:.0f}" if row.loads else "-",
                    f"{1000 * row.wait_seconds_max:.0f}",
                    f"{1000 * statistics.median(lat):.1f}" if lat else "-",
                    f"{1000 * lat[-1]:.1f}" if lat else "-",
                )
            )
        widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]

        def fmt(cells: tuple) -> str:
            first, *rest = (str(c) for c in cells)
            return "  ".join(
                [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
            )

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        return "\n".join([fmt(header), rule, *(fmt(line) for line in lines[:-1]), rule, fmt(lines[-1])])
