"""Medians over repeats, ratios, the targets of issue 4, and the one printed table."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

MB = 1_000_000  # decimal megabytes throughout (the stricter reading of "15 MB" and "8 GB")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    kind: str  # "time" / "memory": lower is better; "rate": higher is better; "info": no ratio
    fmt: str = "{:.1f}"


METRICS: tuple[Metric, ...] = (
    Metric("startup_s", "startup to first /ping (s)", "time", "{:.2f}"),
    Metric("cold_load_p50_ms", "cold load p50 (ms)", "time"),
    Metric("cold_load_p95_ms", "cold load p95 (ms)", "time"),
    Metric("idle_pss_mb", "PSS idle, 0 models (MB)", "memory"),
    Metric("loaded_pss_mb", "PSS with N models loaded (MB)", "memory"),
    Metric("pss_per_model_mb", "PSS per additional model (MB)", "memory", "{:.2f}"),
    # The slope past the first loads: a server that imports its libraries at its first load (MLServer) pays
    # that once, and the average above would charge it to every model of a short run.
    Metric("pss_slope_mb", "PSS per model past the first (MB, load curve)", "memory", "{:.2f}"),
    Metric("warm_p50_ms", "warm invoke p50 (ms)", "time", "{:.2f}"),
    Metric("warm_p99_ms", "warm invoke p99 (ms)", "time", "{:.2f}"),
    Metric("warm_newconn_p50_ms", "warm invoke p50, new connection (ms)", "time", "{:.2f}"),
    Metric("warm_newconn_p99_ms", "warm invoke p99, new connection (ms)", "time", "{:.2f}"),
    Metric("throughput_rps", "throughput, 8 clients (req/s)", "rate", "{:.0f}"),
    # CPU the server tree spent per request during the throughput phase: unlike req/s, hardly moved
    # by other jobs taking the shared cores away.
    Metric("cpu_per_request_ms", "server CPU per request (ms)", "time", "{:.2f}"),
    Metric("unload_p50_ms", "unload p50, DELETE (ms)", "time"),
    Metric("unloaded_pss_mb", "PSS after unloading all (MB)", "memory"),
    Metric("unload_vs_idle_pct", "after unload vs idle (%)", "info", "{:+.1f}"),
)
METRIC_KEYS = tuple(m.key for m in METRICS)


@dataclass(frozen=True)
class Target:
    metric: str
    text: str
    check: Callable[[dict[str, float], dict[str, float] | None], bool]


TARGETS: tuple[Target, ...] = (
    Target("cold_load_p50_ms", "<= 100", lambda o, v: o["cold_load_p50_ms"] <= 100.0),
    Target("pss_per_model_mb", "<= 15", lambda o, v: o["pss_per_model_mb"] <= 15.0),
    Target("warm_p50_ms", "<= vanilla", lambda o, v: v is not None and o["warm_p50_ms"] <= v["warm_p50_ms"]),
    Target("throughput_rps", ">= vanilla",
           lambda o, v: v is not None and o["throughput_rps"] >= v["throughput_rps"]),
    Target("unload_vs_idle_pct", "within 10%", lambda o, v: abs(o["unload_vs_idle_pct"]) <= 10.0),
)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty sample."""
    s = sorted(values)
    if not s:
        raise ValueError("no values")
    pos = (len(s) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def medians(repeats: Sequence[dict[str, float]]) -> dict[str, float]:
    return {k: statistics.median(r[k] for r in repeats) for k in repeats[0] if k in METRIC_KEYS}


def ratio(metric: Metric, ours: float, vanilla: float) -> float | None:
    """> 1 means ours is better: vanilla/ours for time and memory, ours/vanilla for rates."""
    if metric.kind == "info":
        return None
    num, den = (ours, vanilla) if metric.kind == "rate" else (vanilla, ours)
    return num / den if den > 0 else None


def evaluate_targets(ours: dict[str, float], vanilla: dict[str, float] | None) -> dict[str, dict]:
    out = {}
    for t in TARGETS:
        needs_vanilla = "vanilla" in t.text
        out[t.metric] = {"target": t.text, "value": ours[t.metric],
                         "pass": None if needs_vanilla and vanilla is None else bool(t.check(ours, vanilla))}
    return out


def _cell(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Plain-text table: first column left-aligned, the rest right-aligned."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(cells[0]).ljust(widths[0])]
        parts += [str(c).rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True)]
        return "  ".join(parts).rstrip()

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


PEERS = ("vanilla", "mlserver", "mlserver-inproc")  # other stacks: their column is followed by a ratio


def comparison_table(med: dict[str, dict[str, float]], targets: dict[str, dict]) -> str:
    """Rows = metrics; columns = ours, each other server (a peer's followed by its ratio), target, result."""
    others = [label for label in med if label != "ours"]
    others.sort(key=lambda x: 0 if x == "vanilla" else 1 if x not in PEERS else 2)  # vanilla first, as before
    header = ["metric", "ours"]
    for label in others:
        header += [label, "ratio"] if label in PEERS else [label]
    header += ["target (ours)", "result"]
    rows = []
    for m in METRICS:
        ours = med["ours"].get(m.key)
        row = [m.label, _cell(ours, m.fmt)]
        for label in others:
            peer = med[label].get(m.key)
            row.append(_cell(peer, m.fmt))
            if label in PEERS:
                r = ratio(m, ours, peer) if ours is not None and peer is not None else None
                row.append(_cell(r, "{:.2f}x"))
        t = targets.get(m.key)
        verdict = "" if t is None else {True: "PASS", False: "FAIL", None: "n/a"}[t["pass"]]
        rows.append([*row, "" if t is None else t["target"], verdict])
    return format_table(header, rows)


def breakdown_table(breakdowns: dict[str, dict[str, dict[str, float]]]) -> str:
    """Per server and role: processes and PSS added per loaded model."""
    rows = []
    for label, roles in breakdowns.items():
        for role, d in roles.items():
            left = d.get("unloaded_minus_idle_bytes")
            rows.append([label, role, f"{d['procs_per_model']:+.2f}", f"{d['bytes_per_model'] / MB:+.2f}",
                         f"{d['procs_after']:.0f}", f"{d['bytes_after'] / MB:.1f}",
                         "-" if left is None else f"{left / MB:+.1f}"])
    header = ["server", "role", "procs/model", "PSS MB/model", "procs (N loaded)", "PSS MB (N loaded)",
              "unloaded - idle (MB)"]
    return format_table(header, rows)


def ms(seconds: Sequence[float], q: float) -> float:
    return percentile(seconds, q) * 1000.0
