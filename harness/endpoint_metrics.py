"""`/metrics` of a multi-instance endpoint: each instance's series with an `instance` label, plus totals.

Every instance keeps its own HarnessMetrics (the CloudWatch-named series, see metrics.py) and its container
its own; one scrape shows them all, each sample labelled `instance="0"`, `"1"`, ..., and once more summed
over the instances under `instance="all"` (so sum over `instance!="all"` to add instances up yourself).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from sklearn_mme.harness import container_metrics
from sklearn_mme.harness.metrics import _LATENCY_BUCKETS, HarnessMetrics

TOTAL = "all"
_ENDPOINT_ONLY = {"mme_overhead_latency_seconds"}  # measured once, by the endpoint's own API server


@dataclass(frozen=True)
class InstanceSeries:
    """Where one instance's series come from: its harness-side metrics and its container's URL."""

    index: int
    metrics: HarnessMetrics
    container_url: str | None


def _families(series: InstanceSeries) -> Iterator[Metric]:
    yield from (f for f in series.metrics.registry.collect() if f.name not in _ENDPOINT_ONLY)
    if series.container_url:
        yield from text_string_to_metric_families(container_metrics.scrape(series.container_url))


class _InstancesCollector:
    def __init__(self, instances: Callable[[], Iterable[InstanceSeries]]) -> None:
        self._instances = instances

    def collect(self) -> Iterator[Metric]:
        merged: dict[str, Metric] = {}
        totals: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
        for series in self._instances():
            for family in _families(series):
                out = merged.get(family.name)
                if out is None:
                    out = merged[family.name] = Metric(family.name, family.documentation, family.type)
                    totals[family.name] = {}
                sums = totals[family.name]
                for s in family.samples:
                    out.add_sample(s.name, {**s.labels, "instance": str(series.index)}, s.value)
                    key = (s.name, tuple(sorted(s.labels.items())))
                    if s.name.endswith("_created"):  # a start time: the earliest, not a sum
                        sums[key] = min(sums.get(key, s.value), s.value)
                    else:
                        sums[key] = sums.get(key, 0.0) + s.value
        for name, family in merged.items():
            for (sample, labels), value in totals[name].items():
                family.add_sample(sample, {**dict(labels), "instance": TOTAL}, value)
            yield family


class EndpointMetrics:
    """What the endpoint's runtime API needs of its metrics: `overhead_latency` and `exposition()`."""

    def __init__(self, instances: Callable[[], Iterable[InstanceSeries]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.overhead_latency = Histogram(
            "mme_overhead_latency_seconds",
            "Time the harness added to an invocation (excluding load waits).",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_InstancesCollector(instances))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
