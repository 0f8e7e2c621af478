"""Which instance of a multi-instance endpoint gets a request, as SageMaker documents MME routing.

SageMaker ("How multi-model endpoints work"): requests for a model go to an instance where it is already
loaded; when a model gets many requests and the endpoint has more instances, some of its requests go to
another instance, which loads it too. Otherwise a request goes to the least loaded instance. SageMaker does
not publish what "many" is: here a model is hot when its requests over the last `window` seconds exceed
`hot_rate` per second for each instance that holds or is loading it. Least loaded: fewest requests in
flight, then fewest models held, then the lowest index (so a replay routes the same way each time).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from sklearn_mme.harness.registry import LOADED, LOADING


@dataclass(frozen=True)
class InstanceView:
    """What routing needs to know about one live instance at the moment of a request."""

    index: int
    state: str | None  # the model's state there: loaded, loading, unloading, or None (not there)
    inflight: int  # requests in flight on the instance
    models: int  # models it holds


def _least_loaded(views: list[InstanceView]) -> InstanceView:
    return min(views, key=lambda v: (v.inflight, v.models, v.index))


class Router:
    def __init__(self, hot_rate: float, window: float = 1.0, clock: Callable[[], float] = time.monotonic):
        self.hot_rate = hot_rate
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._recent: dict[str, deque[float]] = {}

    def rate(self, key: str, record: bool = False) -> float:
        """Requests per second for `key` over the last window (counting this one when `record`)."""
        now = self._clock()
        with self._lock:
            times = self._recent.setdefault(key, deque())
            if record:
                times.append(now)
            while times and times[0] < now - self.window:
                times.popleft()
            if not times:
                del self._recent[key]
            return len(times) / self.window

    def choose(self, key: str, views: list[InstanceView]) -> int:
        """The index of the instance for this request of `key` (`views`: the live instances, non-empty)."""
        rate = self.rate(key, record=True)
        holders = [v for v in views if v.state == LOADED]
        loading = [v for v in views if v.state == LOADING]
        others = [v for v in views if v.state not in (LOADED, LOADING)]
        serving = len(holders) + len(loading)
        if serving and (not others or rate <= self.hot_rate * serving):
            return _least_loaded(holders or loading).index
        # Not anywhere yet, or hot: the least loaded instance that does not have it (it loads it there).
        return _least_loaded(others).index
