"""Prometheus metrics of the harness: SageMaker's CloudWatch MME metrics under Prometheus names.

Fixed names (tests and dashboards rely on them): mme_loaded_model_count, mme_model_cache_hit_total,
mme_model_cache_miss_total, mme_model_loading_wait_seconds, mme_model_downloading_seconds,
mme_model_loading_seconds, mme_model_unloading_seconds. Per-model series carry a `model` label (the
TargetModel key); a harness has its own registry so several can live in one process (tests).
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Loads of sklearn models take ~0.1 s to a few s; invocations ~1 ms to seconds.
_LOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    60.0,
)


class HarnessMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.loaded_models = Gauge("mme_loaded_model_count", "Models loaded in the container.", registry=r)
        self.cache_hit = Counter(
            "mme_model_cache_hit", "Invocations whose model was already loaded.", ["model"], registry=r
        )
        self.cache_miss = Counter(
            "mme_model_cache_miss",
            "Invocations whose model was not loaded when they arrived.",
            ["model"],
            registry=r,
        )
        self.loading_wait = Histogram(
            "mme_model_loading_wait_seconds",
            "Time an invocation waited for its model to be downloaded/loaded.",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.downloading = Histogram(
            "mme_model_downloading_seconds",
            "Time to download a model artifact from the store.",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.loading = Histogram(
            "mme_model_loading_seconds",
            "Time for the container to load a model (POST /models).",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.unloading = Histogram(
            "mme_model_unloading_seconds",
            "Time for the container to unload a model (DELETE /models).",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=r,
        )
        self.unloads = Counter(
            "mme_model_unload",
            "Models unloaded, by reason (lru = --max-models/--memory-budget, 507 = the "
            "container was full, lost = the container no longer had it).",
            ["model", "reason"],
            registry=r,
        )
        self.load_failures = Counter(
            "mme_model_load_failure", "Model loads that failed.", ["model"], registry=r
        )
        self.invocations = Counter(
            "mme_invocation",
            "Invocations answered, by model and HTTP status.",
            ["model", "status"],
            registry=r,
        )
        self.model_latency = Histogram(
            "mme_model_latency_seconds",
            "Time the container took to answer an invocation.",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.overhead_latency = Histogram(
            "mme_overhead_latency_seconds",
            "Time the harness added to an invocation (excluding load waits).",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.artifact_cache_bytes = Gauge(
            "mme_artifact_cache_bytes", "Bytes of artifacts in the local disk cache.", registry=r
        )
        self.loaded_bytes = Gauge(
            "mme_loaded_model_bytes", "Estimated memory of loaded models (their extracted size).", registry=r
        )

        # Text appended to the exposition: the container's own series (harness/container_metrics.py).
        self.sources: list[Callable[[], str]] = []

    def exposition(self) -> bytes:
        extra = "".join(source() for source in self.sources)
        return generate_latest(self.registry) + extra.encode("utf-8")


def parse_exposition(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} from Prometheus text, for tests and reports."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def sample_sum(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for (sample_name, sample_labels), value in samples.items():
        if sample_name == name and all(dict(sample_labels).get(k) == v for k, v in labels.items()):
            total += value
    return total
