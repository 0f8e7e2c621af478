"""The one owner of model lifecycle in the harness: which TargetModels are loading, loaded or unloading.

Every state change happens here, under one condition variable: a request acquires a loaded model (starting
its load when there is none, waiting for it when one is under way), a load is marked loaded or failed, a
model is claimed for unloading (least recently used first, never while a request uses it) and forgotten.
What to load, where to make room and how to talk to the container are the callers' business.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sklearn_mme.harness.errors import ModelNotReadyException, RuntimeApiError

LOADING, LOADED, UNLOADING = "loading", "loaded", "unloading"


def opaque_name(key: str) -> str:
    """The model name the container sees: a hash of the TargetModel, like SageMaker's."""
    return hashlib.sha256(key.encode()).hexdigest()[:40]


@dataclass(eq=False)
class ModelRecord:
    key: str
    name: str
    state: str = LOADING
    directory: Path | None = None
    footprint: int = 0
    inflight: int = 0
    reserved: bool = False  # holds a slot of max_models / memory_budget while loading
    error: RuntimeApiError | None = None


class ModelRegistry:
    def __init__(self, wait_limit: float, on_change: Callable[[int, int], None]) -> None:
        """`on_change(count, bytes)` hears, under the lock, how many models the container holds now."""
        self.wait_limit = wait_limit
        self._on_change = on_change
        self._cond = threading.Condition()
        self._models: OrderedDict[str, ModelRecord] = OrderedDict()  # least recently used first

    # ---- requests ---------------------------------------------------------------------------------------

    def acquire(
        self,
        key: str,
        deadline: float,
        start_load: Callable[[ModelRecord], object],
        arrived: Callable[[bool], None] | None = None,
    ) -> tuple[ModelRecord, bool]:
        """The loaded model for `key` with one more request in flight, and whether it was loaded when the
        request arrived (told to `arrived` at once). Starts its load (`start_load`, under the lock, must
        not block) when nobody has; waits until `deadline` for it."""
        with self._cond:
            model = self._models.get(key)
            hit = model is not None and model.state == LOADED
            if arrived is not None:
                arrived(hit)
            while True:
                model = self._models.get(key)
                if model is None:
                    model = ModelRecord(key, opaque_name(key))
                    self._models[key] = model
                    start_load(model)
                if model.state == LOADED:
                    model.inflight += 1
                    self._models.move_to_end(key)
                    return model, hit
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise ModelNotReadyException(
                        f"Model {key} is still {'loading' if model.state == LOADING else 'unloading'} after "
                        f"{self.wait_limit:g}s; try again shortly."
                    )
                self._cond.wait(remaining)
                if model.error is not None:
                    # A copy: many waiters raise it at once, each with its own traceback.
                    raise model.error.clone()

    def release(self, model: ModelRecord) -> None:
        with self._cond:
            model.inflight -= 1
            if model.inflight == 0:
                self._cond.notify_all()  # a loader may be waiting for an idle model to evict

    # ---- loads ------------------------------------------------------------------------------------------

    def make_room(
        self,
        model: ModelRecord,
        fits: Callable[[list[int], int], bool],
        evict: Callable[[ModelRecord], None],
        deadline: float,
    ) -> None:
        """Evict least recently used idle models until `fits(footprints held, model's footprint)`, then
        reserve the model's place. `evict` runs outside the lock."""
        with self._cond:
            while not fits([m.footprint for m in self._occupied_locked(model)], model.footprint):
                victim = self._claim_lru_locked(model)
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
                    evict(victim)
                finally:
                    self._cond.acquire()
            model.reserved = True

    def mark_loaded(self, model: ModelRecord) -> None:
        with self._cond:
            model.state = LOADED
            model.reserved = False
            self._changed_locked()

    def fail(self, model: ModelRecord, err: RuntimeApiError) -> None:
        """The load failed: its waiters get `err`, the next request starts a fresh load."""
        with self._cond:
            model.error = err
            model.reserved = False
            if self._models.get(model.key) is model:
                del self._models[model.key]
            self._changed_locked()

    # ---- unloads ----------------------------------------------------------------------------------------

    def claim_lru(self, exclude: ModelRecord) -> ModelRecord | None:
        """The least recently used loaded model nobody is using, marked as unloading."""
        with self._cond:
            return self._claim_lru_locked(exclude)

    def claim(self, key: str) -> ModelRecord | None:
        """`key`'s model marked as unloading if it is loaded and idle; else None."""
        with self._cond:
            model = self._models.get(key)
            if model is None or model.state != LOADED or model.inflight:
                return None
            model.state = UNLOADING
            return model

    def forget(self, model: ModelRecord) -> bool:
        """The container no longer holds `model`; True when it was still registered here."""
        with self._cond:
            removed = self._models.get(model.key) is model
            if removed:
                del self._models[model.key]
            self._changed_locked()
            return removed

    def others_hold(self, model: ModelRecord) -> bool:
        """Whether any other model holds (or has reserved) a place in the container."""
        with self._cond:
            return bool(self._occupied_locked(model))

    def wait(self, timeout: float) -> None:
        """Wait for any change of state (or `timeout`)."""
        with self._cond:
            self._cond.wait(timeout)

    def held(self) -> list[ModelRecord]:
        """Models the container holds or is unloading (not those still loading)."""
        with self._cond:
            return [m for m in self._models.values() if m.state != LOADING]

    def state(self, key: str) -> str | None:
        """`key`'s state (loading, loaded, unloading), None when it is not here."""
        with self._cond:
            model = self._models.get(key)
            return None if model is None else model.state

    def count(self) -> int:
        """Models held, loading or unloading."""
        with self._cond:
            return len(self._models)

    def snapshot(self) -> list[dict]:
        """Every model, least recently used first."""
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

    # ---- under the lock ---------------------------------------------------------------------------------

    def _occupied_locked(self, exclude: ModelRecord) -> list[ModelRecord]:
        return [
            m
            for m in self._models.values()
            if m is not exclude and (m.state in (LOADED, UNLOADING) or m.reserved)
        ]

    def _claim_lru_locked(self, exclude: ModelRecord) -> ModelRecord | None:
        for m in self._models.values():
            if m is not exclude and m.state == LOADED and m.inflight == 0:
                m.state = UNLOADING
                return m
        return None

    def _changed_locked(self) -> None:
        held = [m for m in self._models.values() if m.state in (LOADED, UNLOADING)]
        self._on_change(len(held), sum(m.footprint for m in held))
        self._cond.notify_all()
