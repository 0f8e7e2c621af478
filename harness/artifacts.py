"""A local disk cache of downloaded artifacts with its own byte budget, least recently used out first.

SageMaker keeps downloaded model artifacts on the instance's disk and only downloads again when they are gone;
this plays that part. Entries are validated against the store's etag, so a re-uploaded artifact is fetched
again. One download per key at a time (callers for the same key wait for it); entries in use stay.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sklearn_mme.harness.store import Store, StoreObject


class ArtifactNotFound(KeyError):
    """The store has no object under this key."""


@dataclass
class _Entry:
    path: Path
    size: int
    etag: str
    pins: int = 0


@dataclass(frozen=True)
class Fetched:
    path: Path
    size: int
    downloaded: bool  # False when served from the disk cache
    seconds: float  # download time (0 when cached)


class ArtifactCache:
    def __init__(self, store: Store, directory: Path, budget_bytes: int) -> None:
        self.store = store
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[str, threading.Lock] = {}
        self.downloads = 0
        self.hits = 0
        self.evictions = 0

    @property
    def used_bytes(self) -> int:
        with self._lock:
            return sum(e.size for e in self._entries.values())

    def _key_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    @contextmanager
    def fetch(self, key: str, obj: StoreObject | None = None) -> Iterator[Fetched]:
        """Yield `key`'s artifact on local disk, downloading it when missing or stale; pinned while in use."""
        with self._key_lock(key):
            if obj is None:
                obj = self.store.stat(key)
            if obj is None:
                raise ArtifactNotFound(key)
            with self._lock:
                entry = self._entries.get(key)
                fresh = entry is not None and entry.etag == obj.etag and entry.path.exists()
                if fresh:
                    self._entries.move_to_end(key)
                    entry.pins += 1
                    self.hits += 1
            if fresh:
                result = Fetched(entry.path, entry.size, False, 0.0)
            else:
                entry, seconds = self._download(key, obj)
                result = Fetched(entry.path, entry.size, True, seconds)
        try:
            yield result
        finally:
            with self._lock:
                entry.pins -= 1
                self._shrink_locked()

    def _download(self, key: str, obj: StoreObject) -> tuple[_Entry, float]:
        name = hashlib.sha256(key.encode()).hexdigest()[:32] + ".tar.gz"
        final = self.directory / name
        fd, tmp_name = tempfile.mkstemp(prefix=".dl.", dir=self.directory)
        os.close(fd)
        tmp = Path(tmp_name)
        start = time.monotonic()
        try:
            size = self.store.download(key, tmp)
        except KeyError:
            tmp.unlink(missing_ok=True)
            raise ArtifactNotFound(key) from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        seconds = time.monotonic() - start
        with self._lock:
            # The manager loads one model at a time per key, so nobody else reads a stale file we replace.
            self._entries.pop(key, None)
            os.replace(tmp, final)
            entry = _Entry(final, size, obj.etag, pins=1)
            self._entries[key] = entry
            self.downloads += 1
        return entry, seconds

    def _shrink_locked(self) -> None:
        total = sum(e.size for e in self._entries.values())
        for key in list(self._entries):
            if total <= self.budget_bytes:
                break
            entry = self._entries[key]
            if entry.pins > 0:
                continue
            del self._entries[key]
            entry.path.unlink(missing_ok=True)
            total -= entry.size
            self.evictions += 1
