"""ModelCache: the single owner of loaded models.

An LRU cache bounded by measured bytes (and optionally by entry count), safe to use from many threads,
that runs exactly one load per missing key however many callers wait for it.

It stores opaque values under opaque string keys and takes the loader per call, so the same cache can
serve one model per worker today and many models per shared pool process later. It deliberately imports
nothing from MMS, HTTP or scikit-learn.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from sklearn_mme.handler.sizing import measure_bytes

__all__ = ["CacheStats", "ModelCache", "ModelTooLarge"]

logger = logging.getLogger(__name__)

T = TypeVar("T")



class ModelTooLarge(Exception):
    """One model alone is bigger than ``max_bytes``; it was measured, then dropped (HTTP 507 upstream)."""

    def __init__(self, key: str, size: int, max_bytes: int) -> None:
        # Pass every field to Exception so the exception survives pickling (e.g. across processes).
        super().__init__(key, size, max_bytes)
        self.key = key
        self.size = size
        self.max_bytes = max_bytes

    def __str__(self) -> str:
        return f"model {self.key!r} needs {self.size} bytes, more than the cache limit of {self.max_bytes}"


@dataclass(frozen=True)
class CacheStats:
    """A consistent snapshot of the cache counters (all taken under one lock acquisition)."""

    hits: int
    misses: int
    loads: int
    load_failures: int
    evictions: int
    load_seconds_total: float
    bytes_held: int
    models_held: int
    max_bytes: int | None
    max_models: int | None


@dataclass
class _Entry(Generic[T]):
    value: T
    size: int


@dataclass
class _Load(Generic[T]):
    """One in-flight load: the loading thread resolves ``future``; concurrent callers wait on it."""

    owner: int  # thread ident of the loading thread, to refuse re-entrant loads of the same key
    future: Future[T]


class ModelCache(Generic[T]):
    """LRU cache of loaded models, bounded by measured bytes and optionally by count.

    Accounting rules:
      * ``hits``: calls (``get_or_load`` or a successful ``get``) served from an entry already present.
      * ``misses``: ``get_or_load`` calls that found no entry, including callers that waited for a load
        another thread had started: they were not served from memory and paid load latency, which is
        what CloudWatch's ModelCacheHit means. A ``get`` that finds nothing counts nothing.
      * ``loads`` / ``load_failures``: loader calls that ended cached / ended in an exception (the loader
        raised, the sizer raised, or the model was too large). Each loader call counts exactly once.
      * ``evictions``: entries removed for any reason (capacity, ``evict``, ``clear``, replacement by a
        different object), which is exactly the number of ``on_evict`` calls.
      * ``load_seconds_total``: wall time spent inside successful loader calls.

    Locking: one lock guards the bookkeeping and is never held while calling the loader, the sizer or
    ``on_evict``, so loads of different keys run concurrently and callbacks may be slow. A loader must not
    call ``get_or_load`` for its own key (that would wait on itself); this raises ``RuntimeError``.

    ``evict``, ``put`` and ``clear`` supersede an in-flight load of the same key: that load still
    delivers its value to the callers waiting on it, but does not insert it, so a model unloaded while
    loading stays unloaded and the next ``get_or_load`` starts a fresh load.
    """

    def __init__(
        self,
        max_bytes: int | None = None,
        max_models: int | None = None,
        sizer: Callable[[T], int] | None = None,
        on_evict: Callable[[str, T], None] | None = None,
    ) -> None:
        if max_bytes is not None and max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0 or None, got {max_bytes}")
        if max_models is not None and max_models < 1:
            raise ValueError(f"max_models must be >= 1 or None, got {max_models}")
        self._max_bytes = max_bytes
        self._max_models = max_models
        self._sizer: Callable[[T], int] = sizer if sizer is not None else measure_bytes
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, _Entry[T]] = OrderedDict()  # least recently used first
        self._loading: dict[str, _Load[T]] = {}
        self._bytes = 0
        self._hits = 0
        self._misses = 0
        self._loads = 0
        self._load_failures = 0
        self._evictions = 0
        self._load_seconds = 0.0

    # -- lookups -------------------------------------------------------------------------------------

    def get_or_load(self, key: str, loader: Callable[[], T]) -> T:
        """Return the cached value for ``key``, calling ``loader`` (once across all threads) if absent.

        Raises whatever the loader raised (the same exception object for every waiting caller), or
        ``ModelTooLarge``; in both cases nothing is cached and the next call tries again.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
                self._hits += 1
                return entry.value
            pending = self._loading.get(key)
            me = threading.get_ident()
            if pending is not None and pending.owner == me:
                raise RuntimeError(f"re-entrant get_or_load for {key!r} from inside its own loader")
            self._misses += 1
            if pending is None:
                pending = _Load(owner=me, future=Future())
                self._loading[key] = pending
                is_loader = True
            else:
                is_loader = False
        if not is_loader:
            return pending.future.result()  # re-raises the loader's exception, if any
        return self._run_load(key, loader, pending)

    def _run_load(self, key: str, loader: Callable[[], T], pending: _Load[T]) -> T:
        """Call the loader and sizer outside the lock, then publish the result to the cache and waiters."""
        try:
            started = time.perf_counter()
            value = loader()
            elapsed = time.perf_counter() - started
            size = self._measure(key, value)
        except BaseException as exc:  # BaseException too: waiters must never hang on an interrupted load
            with self._lock:
                self._load_failures += 1
                if self._loading.get(key) is pending:
                    del self._loading[key]
            pending.future.set_exception(exc)
            raise
        evicted: list[tuple[str, T]] = []
        with self._lock:
            self._loads += 1
            self._load_seconds += elapsed
            if self._loading.get(key) is pending:  # not superseded by evict/put/clear meanwhile
                del self._loading[key]
                evicted = self._insert_locked(key, value, size)
        pending.future.set_result(value)  # release waiters before running possibly slow callbacks
        self._notify(evicted)
        return value

    def get(self, key: str) -> T | None:
        """Return the value for ``key`` and mark it most recently used (a hit), or None if absent."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            self._hits += 1
            return entry.value

    # -- mutation ------------------------------------------------------------------------------------

    def put(self, key: str, value: T) -> None:
        """Insert an already-built value as most recently used, evicting as needed.

        Raises ``ModelTooLarge`` (leaving the cache untouched) if the value alone exceeds ``max_bytes``.
        """
        size = self._measure(key, value)
        with self._lock:
            self._loading.pop(key, None)  # supersede an in-flight load: this value is newer
            evicted = self._insert_locked(key, value, size)
        self._notify(evicted)

    def evict(self, key: str) -> bool:
        """Remove ``key`` (calling ``on_evict``); False if it was not cached. Supersedes an in-flight load."""
        with self._lock:
            self._loading.pop(key, None)
            entry = self._entries.pop(key, None)
            if entry is None:
                return False
            self._bytes -= entry.size
            self._evictions += 1
        self._notify([(key, entry.value)])
        return True

    def clear(self) -> None:
        """Remove every entry (calling ``on_evict`` for each, LRU first) and supersede in-flight loads."""
        with self._lock:
            removed = [(key, entry.value) for key, entry in self._entries.items()]
            self._entries.clear()
            self._loading.clear()
            self._bytes = 0
            self._evictions += len(removed)
        self._notify(removed)

    # -- introspection -------------------------------------------------------------------------------

    def keys(self) -> list[str]:
        """Cached keys, least recently used first (does not change the order)."""
        with self._lock:
            return list(self._entries)

    def peek(self, key: str) -> T | None:
        """The value for ``key``, or None if absent, without changing the order or the counters."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.value

    def size_of(self, key: str) -> int | None:
        """Measured size in bytes of ``key``'s value, or None if absent (does not change the order)."""
        with self._lock:
            entry = self._entries.get(key)
            return None if entry is None else entry.size

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                hits=self._hits,
                misses=self._misses,
                loads=self._loads,
                load_failures=self._load_failures,
                evictions=self._evictions,
                load_seconds_total=self._load_seconds,
                bytes_held=self._bytes,
                models_held=len(self._entries),
                max_bytes=self._max_bytes,
                max_models=self._max_models,
            )

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    # -- internals -----------------------------------------------------------------------------------

    def _measure(self, key: str, value: T) -> int:
        """Size ``value`` (outside the lock: pickling a big model takes a while) and enforce max_bytes."""
        size = int(self._sizer(value))
        if size < 0:
            raise ValueError(f"sizer returned a negative size ({size}) for {key!r}")
        if self._max_bytes is not None and size > self._max_bytes:
            raise ModelTooLarge(key, size, self._max_bytes)
        return size

    def _insert_locked(self, key: str, value: T, size: int) -> list[tuple[str, T]]:
        """Insert as most recently used, then evict LRU entries (never ``key``) until within bounds.

        Caller holds the lock. Returns the removed (key, value) pairs for ``_notify`` to report.
        """
        removed: list[tuple[str, T]] = []
        old = self._entries.pop(key, None)
        if old is not None:
            self._bytes -= old.size
            if old.value is not value:  # replacing a model with another releases the old one
                removed.append((key, old.value))
        self._entries[key] = _Entry(value, size)
        self._bytes += size
        while self._over_bounds_locked():
            lru_key = next(iter(self._entries))
            if lru_key == key:  # only the new entry is left; it fits by bytes (checked) and count (>= 1)
                break
            lru = self._entries.pop(lru_key)
            self._bytes -= lru.size
            removed.append((lru_key, lru.value))
        self._evictions += len(removed)
        return removed

    def _over_bounds_locked(self) -> bool:
        if self._max_bytes is not None and self._bytes > self._max_bytes:
            return True
        return self._max_models is not None and len(self._entries) > self._max_models

    def _notify(self, removed: list[tuple[str, T]]) -> None:
        """Call ``on_evict`` once per removed entry, outside the lock.

        A failing callback is logged, not raised: the cache state is already committed, and one bad
        callback must neither fail the request that triggered the eviction nor skip the other callbacks.
        """
        if self._on_evict is None:
            return
        for key, value in removed:
            try:
                self._on_evict(key, value)
            except Exception:
                logger.exception("on_evict callback failed for model %r", key)
