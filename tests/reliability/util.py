"""Helpers shared by the reliability tests: a running `mme-local serve`, boto3, metrics, a /ping watcher,
payloads whose unpickling would leave a marker file, and small statistics."""

from __future__ import annotations

import io
import pickle
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from tests.harness_process import (  # noqa: F401 - the harness helpers, re-exported for these tests
    RunningHarness,
    metrics,
    runtime_client,
    start_harness,
    stop_harness,
)

# ---- watching /ping while something else happens --------------------------------------------------------


@dataclass
class PingWatch:
    """Polls GET {url}/ping every `interval` s in a thread; records status codes (or exception names)."""

    url: str
    interval: float = 0.1
    timeout: float = 2.0
    results: Counter = field(default_factory=Counter)
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PingWatch:
        def run() -> None:
            session = requests.Session()
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    self.results[session.get(self.url + "/ping", timeout=self.timeout).status_code] += 1
                except requests.RequestException as exc:
                    self.results[type(exc).__name__] += 1
                self.slowest = max(self.slowest, time.monotonic() - t0)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="ping-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def healthy(self) -> bool:
        return set(self.results) == {200} and self.results[200] > 0


# ---- payloads whose unpickling would create a marker file -----------------------------------------------


class _Marker:
    """Unpickling this calls open(path, "w"): the file appears iff the pickle was ever loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def marker_pickle(path: Path) -> bytes:
    return pickle.dumps(_Marker(path), protocol=2)


def marker_npy(path: Path) -> bytes:
    """A valid .npy file of dtype object whose element unpickles into open(path, 'w')."""
    arr = np.empty((1, 4), dtype=object)
    for j in range(4):
        arr[0, j] = _Marker(path)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def write_marker_joblib(path: Path, marker: Path) -> None:
    import joblib

    joblib.dump(_Marker(marker), path)


# ---- small statistics -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def fmt_counter(counter: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items(), key=lambda kv: str(kv[0])))
