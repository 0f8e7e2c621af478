"""What SageMaker does in front of an MME container: load on demand, evict least recently used, invoke.

On a request for a model that is not loaded: one download (through the artifact disk cache) and one safe
extract into a directory under an opaque name (a hash of the key, as SageMaker sends), then `POST /models`,
then invoke. Any number of concurrent requests for that model wait for the same load, each at most
`wait_limit` seconds (then ModelNotReadyException; the load carries on). Requests for loaded models never take
part in someone else's load: they only touch the shared state under a short lock. Before a load the manager
makes room for it under `max_models` / `memory_budget` (each model counted at its extracted size); when the
container still answers 507 it unloads the least recently used idle model (`DELETE`) and retries.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import requests
from sklearn_mme.harness.artifacts import ArtifactCache, ArtifactNotFound
from sklearn_mme.harness.container import ContainerRuntime
from sklearn_mme.harness.errors import (
    InternalFailure,
    ModelError,
    ModelNotReadyException,
    RuntimeApiError,
    ValidationError,
)
from sklearn_mme.harness.extract import UnsafeArchiveError, safe_extract
from sklearn_mme.harness.metrics import HarnessMetrics
from sklearn_mme.harness.mme_client import Answer, MMEClient
from sklearn_mme.harness.store import InvalidKey, Store, StoreError, validate_key

log = logging.getLogger("mme_local.manager")

LOADING, LOADED, UNLOADING = "loading", "loaded", "unloading"


def opaque_name(key: str) -> str:
    """The model name the container sees: a hash of the TargetModel, like SageMaker's."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


@dataclass(eq=False)
class _Model:
    key: str
    name: str
    state: str = LOADING
    directory: Path | None = None
    footprint: int = 0
    inflight: int = 0
    reserved: bool = False  # holds a slot of max_models / memory_budget while loading
    error: RuntimeApiError | None = None


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


@dataclass(frozen=True)
class InvokeResult:
    answer: Answer
    hit: bool
    wait_seconds: float
    model_seconds: float


@dataclass
class ManagerConfig:
    max_models: int | None = None
    memory_budget: int | None = None
    wait_limit: float = 60.0  # per request, for a model being downloaded/loaded
    max_extract_bytes: int = 4 * 1024**3
    load_workers: int = 8


class ModelManager:
    def __init__(
        self,
        store: Store,
        artifacts: ArtifactCache,
        runtime: ContainerRuntime,
        client: MMEClient,
        models_dir: Path,
        metrics: HarnessMetrics,
        config: ManagerConfig | None = None,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.runtime = runtime
        self.client = client
        self.models_dir = Path(models_dir)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = metrics
        self.config = config or ManagerConfig()
        self._cond = threading.Condition()
        self._models: OrderedDict[str, _Model] = OrderedDict()  # least recently used first
        self._stats: dict[str, ModelStats] = {}
        self._loader = ThreadPoolExecutor(self.config.load_workers, thread_name_prefix="mme-load")

    # ---- invocation -------------------------------------------------------------------------------------

    def invoke(
        self,
        key: str,
        body: bytes,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
    ) -> InvokeResult:
        try:
            validate_key(key)
        except InvalidKey as err:
            raise ValidationError(str(err)) from None
        deadline = time.monotonic() + self.config.wait_limit
        first_hit: bool | None = None
        total_wait = 0.0
        for _attempt in range(2):
            model, hit, waited = self._acquire(key, deadline, count=first_hit is None)
            first_hit = hit if first_hit is None else first_hit
            total_wait += waited
            t0 = time.monotonic()
            try:
                answer = self.client.invoke(model.name, body, content_type, accept, custom_attributes,
                                            target_model=key)
            except requests.Timeout:
                raise ModelError(
                    f'Received server error (0) from model {key} with message "Your invocation timed out '
                    'while waiting for a response from container model."',
                    0,
                    "invocation timed out",
                ) from None
            except requests.ConnectionError as err:
                raise InternalFailure(f"the container is not reachable ({type(err).__name__})") from None
            finally:
                self._release(model)
            model_seconds = time.monotonic() - t0
            # A 404 from the invoke route may mean the container dropped the model (crash, restart): reload.
            if answer.status == 404 and self._container_lost(model):
                self._forget(model, reason="lost")
                continue
            break
        self.metrics.model_latency.labels(key).observe(model_seconds)
        self.metrics.invocations.labels(key, str(answer.status)).inc()
        if answer.status >= 400:
            self._stat(key).errors += 1
            kind = "client" if answer.status < 500 else "server"
            raise ModelError(
                f"Received {kind} error ({answer.status}) from model {key} with message "
                f'"{answer.message()}". '
                "See the container log for more information.",
                answer.status,
                answer.text(),
            )
        return InvokeResult(answer, bool(first_hit), total_wait, model_seconds)

    def _stat(self, key: str) -> ModelStats:
        stats = self._stats.get(key)
        if stats is None:
            stats = self._stats.setdefault(key, ModelStats())
        return stats

    def _acquire(self, key: str, deadline: float, count: bool) -> tuple[_Model, bool, float]:
        """The loaded model for `key` with one more request in flight; starts its load when needed."""
        start = time.monotonic()
        with self._cond:
            model = self._models.get(key)
            hit = model is not None and model.state == LOADED
            if count:
                stats = self._stat(key)
                stats.requests += 1
                if hit:
                    stats.hits += 1
                    self.metrics.cache_hit.labels(key).inc()
                else:
                    stats.misses += 1
                    self.metrics.cache_miss.labels(key).inc()
            while True:
                model = self._models.get(key)
                if model is None:
                    model = _Model(key, opaque_name(key))
                    self._models[key] = model
                    self._loader.submit(self._load, model)
                if model.state == LOADED:
                    model.inflight += 1
                    self._models.move_to_end(key)
                    waited = 0.0 if hit else time.monotonic() - start
                    if not hit:
                        self._record_wait(key, waited)
                    return model, hit, waited
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._record_wait(key, time.monotonic() - start)
                    raise ModelNotReadyException(
                        f"Model {key} is still {'loading' if model.state == LOADING else 'unloading'} after "
                        f"{self.config.wait_limit:g}s; try again shortly."
                    )
                self._cond.wait(remaining)
                if model.error is not None:
                    self._record_wait(key, time.monotonic() - start)
                    # A copy: many waiters raise it at once, each with its own traceback.
                    raise model.error.clone()

    def _record_wait(self, key: str, seconds: float) -> None:
        self.metrics.loading_wait.labels(key).observe(seconds)
        stats = self._stat(key)
        stats.wait_seconds += seconds
        stats.max_wait_seconds = max(stats.max_wait_seconds, seconds)

    def _release(self, model: _Model) -> None:
        with self._cond:
            model.inflight -= 1
            if model.inflight == 0:
                self._cond.notify_all()  # a loader may be waiting for an idle model to evict

    def _container_lost(self, model: _Model) -> bool:
        try:
            return self.client.describe(model.name).status == 404
        except requests.RequestException:
            return False

    # ---- loading ----------------------------------------------------------------------------------------

    def _load(self, model: _Model) -> None:
        key = model.key
        try:
            try:
                obj = self.store.stat(key)
            except StoreError as err:
                raise InternalFailure(f"model store unavailable: {err}") from None
            except InvalidKey as err:
                raise ValidationError(str(err)) from None
            if obj is None:
                raise ValidationError(
                    f"Failed to download model data for {key}: no such object in {self.store.uri}"
                )
            target = self.models_dir / model.name
            if target.exists():  # left from an earlier load of the same key
                shutil.rmtree(target)
            try:
                with self.artifacts.fetch(key, obj) as fetched:
                    if fetched.downloaded:
                        self.metrics.downloading.labels(key).observe(fetched.seconds)
                        with self._cond:
                            self._stat(key).downloads += 1
                    size = safe_extract(fetched.path, target, max_bytes=self.config.max_extract_bytes)
            except ArtifactNotFound:
                raise ValidationError(f"Failed to download model data for {key}: it left the store") from None
            except UnsafeArchiveError as err:
                raise ValidationError(f"Model artifact {key} was rejected: {err}") from None
            except StoreError as err:
                raise InternalFailure(f"model store unavailable: {err}") from None
            self.metrics.artifact_cache_bytes.set(self.artifacts.used_bytes)
            model.directory = target
            model.footprint = size
            self._make_room(model)
            seconds = self._post_load(model)
            with self._cond:
                model.state = LOADED
                model.reserved = False
                stats = self._stat(key)
                stats.loads += 1
                stats.load_seconds += seconds
                self._update_gauges_locked()
                self._cond.notify_all()
            self.metrics.loading.labels(key).observe(seconds)
            log.info("loaded %s as %s in %.3fs", key, model.name, seconds)
        except Exception as err:  # every failure must reach the waiters, never kill the loader thread
            api_err = (
                err if isinstance(err, RuntimeApiError) else InternalFailure(f"loading {key} failed: {err}")
            )
            if not isinstance(err, RuntimeApiError):
                log.exception("loading %s failed", key)
            self._fail(model, api_err)

    def _fail(self, model: _Model, err: RuntimeApiError) -> None:
        if model.directory is not None:
            shutil.rmtree(model.directory, ignore_errors=True)
        self.metrics.load_failures.labels(model.key).inc()
        with self._cond:
            model.error = err
            model.reserved = False
            self._stat(model.key).load_failures += 1
            if self._models.get(model.key) is model:
                del self._models[model.key]
            self._update_gauges_locked()
            self._cond.notify_all()

    def _occupied_locked(self, exclude: _Model) -> list[_Model]:
        return [
            m
            for m in self._models.values()
            if m is not exclude and (m.state in (LOADED, UNLOADING) or m.reserved)
        ]

    def _fits_locked(self, model: _Model) -> bool:
        occupied = self._occupied_locked(model)
        if self.config.max_models is not None and len(occupied) + 1 > self.config.max_models:
            return False
        if self.config.memory_budget is not None:
            if sum(m.footprint for m in occupied) + model.footprint > self.config.memory_budget:
                return False
        return True

    def _victim_locked(self, exclude: _Model) -> _Model | None:
        """The least recently used loaded model nobody is using, marked as unloading."""
        for m in self._models.values():
            if m is not exclude and m.state == LOADED and m.inflight == 0:
                m.state = UNLOADING
                return m
        return None

    def _make_room(self, model: _Model) -> None:
        budget = self.config.memory_budget
        if budget is not None and model.footprint > budget:
            raise ValidationError(
                f"Model {model.key} needs about {model.footprint} bytes, more than the whole memory budget "
                f"({budget} bytes)."
            )
        deadline = time.monotonic() + self.config.wait_limit + 60
        with self._cond:
            while not self._fits_locked(model):
                victim = self._victim_locked(model)
                if victim is None:
                    # Everything that could go is busy or already on its way out: wait for a change.
                    if time.monotonic() > deadline:
                        raise ModelNotReadyException(
                            f"No room to load {model.key}: every loaded model is busy; try again shortly."
                        )
                    self._cond.wait(0.5)
                    continue
                self._cond.release()
                try:
                    self._unload(victim, reason="lru")
                finally:
                    self._cond.acquire()
            model.reserved = True

    def _post_load(self, model: _Model) -> float:
        """POST /models, unloading LRU models while the container answers 507; returns the load seconds."""
        assert model.directory is not None
        url = self.runtime.model_url(model.directory)
        deadline = time.monotonic() + self.config.wait_limit + 60
        while True:
            t0 = time.monotonic()
            try:
                answer = self.client.load(model.name, url)
            except requests.RequestException as err:
                raise InternalFailure(
                    f"the container did not answer the load of {model.key}: {err}"
                ) from None
            seconds = time.monotonic() - t0
            if answer.status in (200, 201, 409):  # 409: the container has it already
                return seconds
            if answer.status == 507:
                with self._cond:
                    victim = self._victim_locked(model)
                    others = self._occupied_locked(model)
                if victim is not None:
                    self._unload(victim, reason="507")
                    continue
                if not others:
                    raise ModelError(
                        f"The container has no room for model {model.key} even with no other model loaded.",
                        507,
                        answer.text(),
                    )
                if time.monotonic() > deadline:
                    raise ModelNotReadyException(f"No room to load {model.key}; try again shortly.")
                with self._cond:
                    self._cond.wait(0.5)
                continue
            if answer.status == 404:
                raise InternalFailure(f"the container cannot see the model directory {url}")
            reason = answer.message()  # the container's plugin puts the backend's reason in the body
            raise ModelError(
                f"Failed to load model {model.key}: the container answered {answer.status} "
                f'with message "{reason}"',
                answer.status,
                answer.text(),
            )

    # ---- unloading --------------------------------------------------------------------------------------

    def _unload(self, victim: _Model, reason: str) -> None:
        """DELETE a model already marked UNLOADING (outside the lock), then forget it."""
        t0 = time.monotonic()
        try:
            answer = self.client.unload(victim.name)
            if answer.status not in (200, 202, 204, 404):
                log.warning(
                    "unloading %s: container answered %s %s", victim.key, answer.status, answer.text(200)
                )
        except requests.RequestException as err:
            log.warning("unloading %s failed: %s", victim.key, err)
        seconds = time.monotonic() - t0
        self.metrics.unloading.labels(victim.key).observe(seconds)
        self._forget(victim, reason)

    def _forget(self, model: _Model, reason: str) -> None:
        if model.directory is not None:
            shutil.rmtree(model.directory, ignore_errors=True)
        with self._cond:
            if self._models.get(model.key) is model:
                del self._models[model.key]
                self._stat(model.key).unloads += 1
                self.metrics.unloads.labels(model.key, reason).inc()
                log.info("unloaded %s (%s)", model.key, reason)
            self._update_gauges_locked()
            self._cond.notify_all()

    def unload(self, key: str) -> bool:
        """Unload `key` now if it is loaded and idle (admin use); False otherwise."""
        with self._cond:
            model = self._models.get(key)
            if model is None or model.state != LOADED or model.inflight:
                return False
            model.state = UNLOADING
        self._unload(model, reason="admin")
        return True

    def forget_all(self) -> None:
        """The container was replaced: nothing is loaded any more (loads under way fail on their own)."""
        with self._cond:
            models = [m for m in self._models.values() if m.state != LOADING]
        for model in models:
            self._forget(model, reason="lost")

    def _update_gauges_locked(self) -> None:
        loaded = [m for m in self._models.values() if m.state in (LOADED, UNLOADING)]
        self.metrics.loaded_models.set(len(loaded))
        self.metrics.loaded_bytes.set(sum(m.footprint for m in loaded))

    # ---- reporting --------------------------------------------------------------------------------------

    def loaded(self) -> list[dict]:
        """Models the harness holds, least recently used first."""
        with self._cond:
            return [
                {
                    "model": m.key,
                    "name": m.name,
                    "state": m.state,
                    "bytes": m.footprint,
                    "inflight": m.inflight,
                }
                for m in self._models.values()
            ]

    def stats(self) -> dict[str, ModelStats]:
        with self._cond:
            return {k: ModelStats(**vars(v)) for k, v in self._stats.items()}

    def close(self) -> None:
        self._loader.shutdown(wait=False, cancel_futures=True)
