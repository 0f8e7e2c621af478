"""`mme-deploy metrics`: the MME CloudWatch metrics of an endpoint over a window, as a table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sklearn_mme.deploy.spec import VARIANT

# (namespace, metric, the statistic the table shows, unit note)
MME_METRICS = [
    ("AWS/SageMaker", "Invocations", "Sum", ""),
    ("AWS/SageMaker", "Invocation4XXErrors", "Sum", ""),
    ("AWS/SageMaker", "Invocation5XXErrors", "Sum", ""),
    ("AWS/SageMaker", "ModelLatency", "Average", "us"),
    ("AWS/SageMaker", "OverheadLatency", "Average", "us"),
    ("AWS/SageMaker", "ModelLoadingWaitTime", "Average", "us"),
    ("AWS/SageMaker", "ModelDownloadingTime", "Average", "us"),
    ("AWS/SageMaker", "ModelLoadingTime", "Average", "us"),
    ("AWS/SageMaker", "ModelUnloadingTime", "Average", "us"),
    ("AWS/SageMaker", "ModelCacheHit", "Average", "ratio"),
    ("AWS/SageMaker", "LoadedModelCount", "Maximum", ""),
    ("/aws/sagemaker/Endpoints", "CPUUtilization", "Average", "%"),
    ("/aws/sagemaker/Endpoints", "MemoryUtilization", "Average", "%"),
    ("/aws/sagemaker/Endpoints", "DiskUtilization", "Average", "%"),
]
STATS = ["SampleCount", "Sum", "Average", "Minimum", "Maximum"]


@dataclass
class Row:
    metric: str
    dimensions: str
    stat: str
    unit: str
    samples: float
    value: float | None
    maximum: float | None


def window(hours: float, now: datetime | None = None) -> tuple[datetime, datetime, int]:
    """(start, end, period): one period per window, at least a minute, a multiple of 60 s. The end is the next
    whole minute, so the minute under way counts (timestamps travel at one-second precision, and a point put
    in the current second would otherwise fall just past an end of `now`)."""
    now = now or datetime.now(UTC)
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    seconds = max(60, int(hours * 3600) // 60 * 60)
    return end - timedelta(seconds=seconds), end, seconds


def aggregate(points: list[dict], stat: str) -> tuple[float, float | None, float | None]:
    """(sample count, the statistic over all points, maximum) from GetMetricStatistics datapoints."""
    if not points:
        return 0.0, None, None
    n = sum(p["SampleCount"] for p in points)
    mx = max(p["Maximum"] for p in points)
    if stat == "Sum":
        return n, sum(p["Sum"] for p in points), mx
    if stat == "Maximum":
        return n, mx, mx
    if stat == "Minimum":
        return n, min(p["Minimum"] for p in points), mx
    return n, (sum(p["Sum"] for p in points) / n if n else None), mx


def _row(
    cw: Any,
    namespace: str,
    metric: str,
    dims: list[dict],
    stat: str,
    unit: str,
    start: datetime,
    end: datetime,
    period: int,
) -> Row:
    points = cw.get_metric_statistics(
        Namespace=namespace,
        MetricName=metric,
        Dimensions=dims,
        StartTime=start,
        EndTime=end,
        Period=period,
        Statistics=STATS,
    )["Datapoints"]
    n, value, mx = aggregate(points, stat)
    extra = ",".join(
        f"{d['Name']}={d['Value']}" for d in dims if d["Name"] not in ("EndpointName", "VariantName")
    )
    return Row(metric, extra, stat, unit, n, value, mx)


def collect(cw: Any, name: str, hours: float, custom_namespace: str | None) -> list[Row]:
    start, end, period = window(hours)
    dims = [{"Name": "EndpointName", "Value": name}, {"Name": "VariantName", "Value": VARIANT}]
    rows = [
        _row(cw, ns, metric, dims, stat, unit, start, end, period) for ns, metric, stat, unit in MME_METRICS
    ]
    if custom_namespace:
        # The container's per-model series, when something publishes them (e.g. a CloudWatch agent scraping
        # /metrics): every series of the namespace whose dimensions include this endpoint.
        pages = cw.get_paginator("list_metrics").paginate(
            Namespace=custom_namespace, Dimensions=[{"Name": "EndpointName", "Value": name}]
        )
        series = sorted(
            (m for page in pages for m in page["Metrics"]),
            key=lambda m: (m["MetricName"], str(m["Dimensions"])),
        )
        rows += [
            _row(cw, custom_namespace, m["MetricName"], m["Dimensions"], "Average", "", start, end, period)
            for m in series
        ]
    return rows


def _fmt(v: float | None) -> str:
    if v is None:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 or v == int(v) else f"{v:.3g}"


def table(rows: list[Row]) -> str:
    head = ("metric", "dimensions", "stat", "unit", "samples", "value", "max")
    body = [
        (
            r.metric,
            r.dimensions or "-",
            r.stat,
            r.unit or "-",
            _fmt(r.samples),
            _fmt(r.value),
            _fmt(r.maximum),
        )
        for r in rows
    ]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body, strict=True)]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
        for line in (head, *body)
    ]
    return "\n".join(lines)
