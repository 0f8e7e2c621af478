"""What the harness counts about each model: the Prometheus metrics and the same facts as plain numbers.

One place records every event (request, wait, download, load, failure, unload, invocation), so the
/metrics exposition and the per-model report (`/mme-local/models`, `scenario`) never disagree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sklearn_mme.harness.metrics import HarnessMetrics


@dataclass
class ModelStats:
    """Per-TargetModel counts for reports (the same facts as the metrics, without parsing them)."""

    requests: int = 0
    hits: int = 0
    misses: int = 0
    downloads: int = 0
    loads: int = 0
    load_failures: int = 0
    unloads: int = 0
    errors: int = 0
    load_seconds: float = 0.0
    wait_seconds: float = 0.0
    max_wait_seconds: float = 0.0


class Accounting:
    def __init__(self, metrics: HarnessMetrics) -> None:
        self.metrics = metrics
        self._lock = threading.Lock()
        self._stats: dict[str, ModelStats] = {}

    def _stat(self, key: str) -> ModelStats:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats.setdefault(key, ModelStats())
        return stats

    def request(self, key: str, hit: bool) -> None:
        with self._lock:
            stats = self._stat(key)
            stats.requests += 1
            if hit:
                stats.hits += 1
            else:
                stats.misses += 1
        (self.metrics.cache_hit if hit else self.metrics.cache_miss).labels(key).inc()

    def wait(self, key: str, seconds: float) -> None:
        self.metrics.loading_wait.labels(key).observe(seconds)
        with self._lock:
            stats = self._stat(key)
            stats.wait_seconds += seconds
            stats.max_wait_seconds = max(stats.max_wait_seconds, seconds)

    def download(self, key: str, seconds: float) -> None:
        self.metrics.downloading.labels(key).observe(seconds)
        with self._lock:
            self._stat(key).downloads += 1

    def artifact_cache(self, used_bytes: int) -> None:
        self.metrics.artifact_cache_bytes.set(used_bytes)

    def load(self, key: str, seconds: float) -> None:
        self.metrics.loading.labels(key).observe(seconds)
        with self._lock:
            stats = self._stat(key)
            stats.loads += 1
            stats.load_seconds += seconds

    def load_failure(self, key: str) -> None:
        self.metrics.load_failures.labels(key).inc()
        with self._lock:
            self._stat(key).load_failures += 1

    def unload_seconds(self, key: str, seconds: float) -> None:
        self.metrics.unloading.labels(key).observe(seconds)

    def unload(self, key: str, reason: str) -> None:
        self.metrics.unloads.labels(key, reason).inc()
        with self._lock:
            self._stat(key).unloads += 1

    def invocation(self, key: str, status: int, seconds: float) -> None:
        self.metrics.model_latency.labels(key).observe(seconds)
        self.metrics.invocations.labels(key, str(status)).inc()
        if status >= 400:
            with self._lock:
                self._stat(key).errors += 1

    def loaded(self, count: int, nbytes: int) -> None:
        """The models the container holds now (the gauges)."""
        self.metrics.loaded_models.set(count)
        self.metrics.loaded_bytes.set(nbytes)

    def snapshot(self) -> dict[str, ModelStats]:
        with self._lock:
            return {k: ModelStats(**vars(v)) for k, v in self._stats.items()}
