"""How a shared host process keeps many models within the container's memory budget.

A host holds its models in one ModelCache (handler/cache.py), sized by measured bytes. The budget
(MME_MEMORY_BUDGET) is shared, not split: every host and every model's own process records what it holds in
the container's memory ledger (ledger.py), and a host that needs room evicts its own least recently used
models until the ledger's total fits. An evicted model stays registered with MMS and is loaded again from
its local directory on its next request (milliseconds). Only a model bigger than the whole budget, or one
that does not fit after the host evicted everything else it held, answers 507 (SageMaker then unloads models
and retries). Without a budget a host keeps what it loaded and, as a model's own process does, answers 507
when the machine's available memory is short.
"""

from __future__ import annotations

import logging
import os
import threading

import psutil

from sklearn_mme.container.ledger import MemoryLedger
from sklearn_mme.container.settings import Wiring
from sklearn_mme.handler.cache import ModelCache
from sklearn_mme.handler.errors import InsufficientMemory

log = logging.getLogger("mme.host")


class HostMemory:
    def __init__(self, wiring: Wiring) -> None:
        self.budget = wiring.memory_budget_bytes
        self.reserve = wiring.memory_reserve_bytes
        self.ledger = MemoryLedger(wiring.state_dir) if wiring.state_dir else None
        self.cache: ModelCache = ModelCache(sizer=_sizer, on_evict=self._evicted)
        self.lock = threading.RLock()  # loads run in threads (host_loop.py); evictions call back into record
        # cache key (model dir) -> the names registered for it here (one load serves them all), for the ledger
        self.names: dict[str, set[str]] = {}

    def room(self, name: str, key: str, nbytes: int) -> None:
        """`key` (`name`, `nbytes` measured) is in the cache: evict others until it fits, else raise 507."""
        with self.lock:
            self._room(name, key, nbytes)

    def _room(self, name: str, key: str, nbytes: int) -> None:
        self.names.setdefault(key, set()).add(name)
        if self.budget:
            if nbytes > self.budget:
                raise InsufficientMemory(f"model needs {nbytes} bytes, more than the whole "
                                         f"{self.budget}-byte budget")
            others = self.ledger.total(exclude_pid=os.getpid()) if self.ledger else 0
            for lru in self.cache.keys():
                if others + self.cache.stats().bytes_held <= self.budget:
                    break
                if lru != key:
                    self.cache.evict(lru)
            held = self.cache.stats().bytes_held
            if others + held > self.budget:
                raise InsufficientMemory(f"model needs {nbytes} bytes; {others + held - nbytes} of the "
                                         f"{self.budget}-byte budget are in use")
        elif psutil.virtual_memory().available < nbytes + self.reserve:
            raise InsufficientMemory(f"model needs {nbytes} bytes and the machine has too little free memory")
        self.record()

    def drop(self, key: str, name: str, last: bool) -> None:
        """A model's connection here went (DELETE); the `last` one for its directory frees it now."""
        with self.lock:
            self.names.get(key, set()).discard(name)
            if last:
                self.names.pop(key, None)
                self.cache.evict(key)
            self.record()

    def record(self) -> None:
        """One ledger line per model held: the budget's sum, and each model's bytes in GET /metrics."""
        if self.ledger is None:
            return
        with self.lock:
            # Every name of a shared directory shows its bytes (the sum overcounts: on the safe side).
            entries = [(self.cache.size_of(key) or 0, name, _skews(self.cache.peek(key)))
                       for key in self.cache.keys() for name in sorted(self.names.get(key) or {key})]
            if entries:
                self.ledger.record_all(entries, shared_host=True)
            else:
                self.ledger.forget(os.getpid())  # holding nothing: no record, as a worker that ended

    def _evicted(self, key: str, _value: object) -> None:
        log.debug("%s left the cache (it reloads from its directory on its next request)", key)
        self.record()


def _skews(service: object) -> list[tuple[str, str, str]]:
    """The library version skews a held model was loaded with (handler/versions.py), for the ledger."""
    return [(s.library, s.written, s.installed) for s in getattr(service, "version_skew", None) or []]


def _sizer(service: object) -> int:
    from sklearn_mme.handler.sizing import measure_bytes

    return measure_bytes(service.model)  # type: ignore[attr-defined]
