"""What SageMaker does in front of an MME container: load on demand, evict least recently used, invoke.

On a request for a model that is not loaded: one download and one safe extract (staging.py) into a directory
under an opaque name, room made under the harness's own limits (capacity.py), then `POST /models`
(container_loads.py: 507 -> unload the least recently used idle model and retry), then invoke. Any number of
concurrent requests for that model wait for the same load, each at most `wait_limit` seconds (then
ModelNotReadyException; the load carries on). The registry (registry.py) alone owns each model's state;
requests for loaded models only touch it under a short lock. This module puts those parts together.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from sklearn_mme.harness.accounting import Accounting, ModelStats
from sklearn_mme.harness.artifacts import ArtifactCache
from sklearn_mme.harness.capacity import CapacityPolicy
from sklearn_mme.harness.container import ContainerRuntime
from sklearn_mme.harness.container_loads import ContainerLoads
from sklearn_mme.harness.errors import (
    InternalFailure,
    ModelError,
    ModelNotReadyException,
    RuntimeApiError,
    ValidationError,
)
from sklearn_mme.harness.metrics import HarnessMetrics
from sklearn_mme.harness.mme_client import Answer, MMEClient
from sklearn_mme.harness.registry import ModelRecord, ModelRegistry
from sklearn_mme.harness.staging import Stager
from sklearn_mme.harness.store import InvalidKey, Store, validate_key

log = logging.getLogger("mme_local.manager")

ROOM_GRACE_S = 60  # beyond wait_limit, how long a load may wait for room before giving up


@dataclass(frozen=True)
class InvokeResult:
    answer: Answer
    hit: bool
    wait_seconds: float
    model_seconds: float
    instance: int | None = None  # which instance answered, on a multi-instance endpoint (endpoint.py)


@dataclass
class ManagerConfig:
    max_models: int | None = None
    memory_budget: int | None = None
    wait_limit: float = 60.0  # per request, for a model being downloaded/loaded
    max_extract_bytes: int = 4 * 1024**3


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
        self.client = client
        self.config = config or ManagerConfig()
        self.accounting = Accounting(metrics)
        self.registry = ModelRegistry(self.config.wait_limit, self.accounting.loaded)
        self.capacity = CapacityPolicy(self.config.max_models, self.config.memory_budget)
        self.stager = Stager(store, artifacts, models_dir, self.accounting, self.config.max_extract_bytes)
        self.container = ContainerLoads(client, runtime)

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
            try:
                answer, model_seconds = self._send(model, body, content_type, accept, custom_attributes)
            finally:
                self.registry.release(model)
            # A 404 from the invoke route may mean the container dropped the model (crash, restart): reload.
            if answer.status == 404 and self._container_lost(model):
                self._evict(model, reason="lost", delete=False)
                continue
            break
        self.accounting.invocation(key, answer.status, model_seconds)
        if answer.status >= 400:
            kind = "client" if answer.status < 500 else "server"
            raise ModelError(
                f"Received {kind} error ({answer.status}) from model {key} with message "
                f'"{answer.message()}". '
                "See the container log for more information.",
                answer.status,
                answer.text(),
            )
        return InvokeResult(answer, bool(first_hit), total_wait, model_seconds)

    def _acquire(self, key: str, deadline: float, count: bool) -> tuple[ModelRecord, bool, float]:
        """The loaded model for `key` with one more request in flight, the hit, and the seconds waited."""
        start = time.monotonic()
        arrived = (lambda hit: self.accounting.request(key, hit)) if count else None
        try:
            model, hit = self.registry.acquire(key, deadline, self._start_load, arrived)
        except RuntimeApiError:
            self.accounting.wait(key, time.monotonic() - start)
            raise
        waited = 0.0 if hit else time.monotonic() - start
        if not hit:
            self.accounting.wait(key, waited)
        return model, hit, waited

    def _send(
        self,
        model: ModelRecord,
        body: bytes,
        content_type: str | None,
        accept: str | None,
        custom_attributes: str | None,
    ) -> tuple[Answer, float]:
        t0 = time.monotonic()
        try:
            answer = self.client.invoke(model.name, body, content_type, accept, custom_attributes,
                                        target_model=model.key)
        except requests.Timeout:
            raise ModelError(
                f'Received server error (0) from model {model.key} with message "Your invocation timed out '
                'while waiting for a response from container model."',
                0,
                "invocation timed out",
            ) from None
        except requests.ConnectionError as err:
            raise InternalFailure(f"the container is not reachable ({type(err).__name__})") from None
        return answer, time.monotonic() - t0

    def _container_lost(self, model: ModelRecord) -> bool:
        try:
            return self.client.describe(model.name).status == 404
        except requests.RequestException:
            return False

    # ---- loading ----------------------------------------------------------------------------------------

    def _start_load(self, model: ModelRecord) -> None:
        # A thread per load, not a pool: a few slow model_fn's must not queue the loads of other models until
        # their waiters time out. Loads are bounded by the distinct keys requested at once, and each request
        # already holds a connection thread.
        name = f"mme-load-{model.name[:8]}"
        threading.Thread(target=self._load, args=(model,), name=name, daemon=True).start()

    def _load(self, model: ModelRecord) -> None:
        key = model.key
        deadline = time.monotonic() + self.config.wait_limit + ROOM_GRACE_S
        try:
            staged = self.stager.stage(key, model.name)
            model.directory, model.footprint = staged.directory, staged.size
            self.capacity.check(key, model.footprint)
            self.registry.make_room(
                model, self.capacity.fits, lambda victim: self._evict(victim, reason="lru"), deadline
            )
            seconds = self.container.load(
                model.name,
                key,
                staged.directory,
                lambda answer: self._room_after_507(model, answer, deadline),
            )
            self.accounting.load(key, seconds)  # counted before any waiter can answer
            self.registry.mark_loaded(model)
            log.info("loaded %s as %s in %.3fs", key, model.name, seconds)
        except Exception as err:  # every failure must reach the waiters, never kill the loader thread
            if not isinstance(err, RuntimeApiError):
                # The details (local paths among them) go to the log; the client gets the kind of failure.
                log.exception("loading %s failed", key)
                err = InternalFailure(f"loading {key} failed ({type(err).__name__}); see the harness log")
            self.stager.discard(model.directory)
            self.accounting.load_failure(key)
            self.registry.fail(model, err)

    def _room_after_507(self, model: ModelRecord, answer: Answer, deadline: float) -> None:
        """The container is full: unload the least recently used idle model, or wait for one, or give up."""
        victim = self.registry.claim_lru(model)
        if victim is not None:
            self._evict(victim, reason="507")
            return
        if not self.registry.others_hold(model):
            raise ModelError(
                f"The container has no room for model {model.key} even with no other model loaded.",
                507,
                answer.text(),
            )
        if time.monotonic() > deadline:
            raise ModelNotReadyException(f"No room to load {model.key}; try again shortly.")
        self.registry.wait(0.5)

    # ---- unloading --------------------------------------------------------------------------------------

    def _evict(self, model: ModelRecord, reason: str, delete: bool = True) -> None:
        """DELETE a model already claimed for unloading (unless the container lost it), then forget it."""
        if delete:
            seconds = self.container.unload(model.name, model.key)
            self.accounting.unload_seconds(model.key, seconds)
        self.stager.discard(model.directory)
        if self.registry.forget(model):
            self.accounting.unload(model.key, reason)
            log.info("unloaded %s (%s)", model.key, reason)

    def unload(self, key: str) -> bool:
        """Unload `key` now if it is loaded and idle (admin use); False otherwise."""
        model = self.registry.claim(key)
        if model is None:
            return False
        self._evict(model, reason="admin")
        return True

    def forget_all(self) -> None:
        """The container was replaced: nothing is loaded any more (loads under way fail on their own)."""
        for model in self.registry.held():
            self._evict(model, reason="lost", delete=False)

    # ---- reporting --------------------------------------------------------------------------------------

    def loaded(self) -> list[dict]:
        """Models the harness holds, least recently used first."""
        return self.registry.snapshot()

    def state(self) -> dict:
        """What `/mme-local/models` shows: the container, the models held, the per-model counts."""
        return {
            "container": self.client.base_url,
            "loaded": self.loaded(),
            "stats": {k: vars(v) for k, v in self.stats().items()},
        }

    def stats(self) -> dict[str, ModelStats]:
        return self.accounting.snapshot()

    def close(self) -> None:
        """Loads under way are daemon threads: they end with the process (their container is gone too)."""
