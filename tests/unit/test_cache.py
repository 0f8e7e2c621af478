"""Unit tests for the ModelCache and measure_bytes (real threads, real scikit-learn models)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression, Ridge

from sklearn_mme.handler.cache import CacheStats, ModelCache, ModelTooLarge
from sklearn_mme.handler.sizing import measure_bytes

# Generous bound for anything that should happen "immediately"; only reached when the code is broken,
# so a regression fails the test instead of hanging the suite.
WAIT = 5.0


def run_threads(n: int, target: Callable[[int], None]) -> None:
    """Run ``target(i)`` in ``n`` threads released together by a barrier; fail if any thread hangs."""
    barrier = threading.Barrier(n)

    def body(i: int) -> None:
        barrier.wait()
        target(i)

    threads = [threading.Thread(target=body, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
        assert not t.is_alive(), "thread hung"


def call_with_timeout(fn: Callable[[], object]) -> object:
    """Run ``fn`` in a daemon thread so a deadlock becomes a test failure, not a hung suite."""
    box: dict[str, object] = {}

    def body() -> None:
        try:
            box["result"] = fn()
        except BaseException as exc:  # handed back to the test thread below
            box["error"] = exc

    t = threading.Thread(target=body, daemon=True)
    t.start()
    t.join(WAIT)
    assert not t.is_alive(), "call deadlocked"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box.get("result")


@pytest.fixture(scope="module")
def models() -> dict[str, object]:
    """Real fitted estimators of very different sizes (a few hundred bytes vs ~400 kB)."""
    rng = np.random.default_rng(0)
    small = {}
    for name in ("lr_a", "lr_b", "lr_c"):
        x = rng.normal(size=(100, 10))
        small[name] = LogisticRegression().fit(x, (x[:, 0] > 0).astype(int))
    wide = rng.normal(size=(20, 50_000))
    big = Ridge().fit(wide, rng.normal(size=20))  # coef_ holds 50,000 float64 = 400 kB
    return {**small, "ridge": big}


# -- concurrency ---------------------------------------------------------------------------------------


def test_concurrent_get_or_load_same_key_loads_once() -> None:
    cache: ModelCache[object] = ModelCache()
    calls = 0
    n = 32

    def loader() -> object:
        nonlocal calls
        calls += 1
        # Wait until every caller has registered its miss, proving they all arrived while the load was in
        # flight (and that the loader runs outside the cache lock, or stats() would deadlock here).
        deadline = time.monotonic() + WAIT
        while cache.stats().misses < n and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(0.3)
        return object()

    results: list[object] = [None] * n

    def worker(i: int) -> None:
        results[i] = cache.get_or_load("m", loader)

    run_threads(n, worker)
    assert calls == 1
    assert all(r is results[0] for r in results)
    stats = cache.stats()
    assert stats.loads == 1
    assert stats.misses == n  # waiters count as misses: they were not served from memory
    assert stats.hits == 0
    assert cache.get_or_load("m", loader) is results[0]
    assert cache.stats().hits == 1


def test_loads_of_different_keys_overlap() -> None:
    cache: ModelCache[str] = ModelCache()
    started = {"a": threading.Event(), "b": threading.Event()}
    saw_other_running: dict[str, bool] = {}

    def make_loader(me: str, other: str) -> Callable[[], str]:
        def loader() -> str:
            started[me].set()
            # If loads were serialized, the other loader could not start until this one returned.
            saw_other_running[me] = started[other].wait(WAIT)
            return me

        return loader

    def worker(i: int) -> None:
        key, other = ("a", "b") if i == 0 else ("b", "a")
        assert cache.get_or_load(key, make_loader(key, other)) == key

    run_threads(2, worker)
    assert saw_other_running == {"a": True, "b": True}
    assert sorted(cache.keys()) == ["a", "b"]


def test_cache_usable_while_a_load_is_in_flight() -> None:
    cache: ModelCache[str] = ModelCache()
    cache.put("ready", "r")
    in_loader, release = threading.Event(), threading.Event()

    def slow_loader() -> str:
        in_loader.set()
        release.wait(WAIT)
        return "slow"

    t = threading.Thread(target=lambda: cache.get_or_load("slow", slow_loader), daemon=True)
    t.start()
    assert in_loader.wait(WAIT)
    # None of these may block on the in-flight load.
    assert call_with_timeout(lambda: cache.get("ready")) == "r"
    assert call_with_timeout(lambda: cache.get_or_load("other", lambda: "o")) == "o"
    assert "slow" not in cache and cache.get("slow") is None
    release.set()
    t.join(WAIT)
    assert cache.get("slow") == "slow"


def test_failed_load_reaches_all_waiters_and_is_not_cached() -> None:
    cache: ModelCache[str] = ModelCache()
    n = 16
    calls = 0
    error = ValueError("corrupt model")

    def failing_loader() -> str:
        nonlocal calls
        calls += 1
        deadline = time.monotonic() + WAIT
        while cache.stats().misses < n and time.monotonic() < deadline:
            time.sleep(0.005)
        raise error

    raised: list[BaseException | None] = [None] * n

    def worker(i: int) -> None:
        try:
            cache.get_or_load("m", failing_loader)
        except ValueError as exc:
            raised[i] = exc

    run_threads(n, worker)
    assert calls == 1
    assert all(exc is error for exc in raised)  # the same exception object, for every caller
    assert "m" not in cache and len(cache) == 0
    stats = cache.stats()
    assert (stats.loads, stats.load_failures, stats.bytes_held) == (0, 1, 0)

    # The failure is not cached: the next call loads again.
    assert cache.get_or_load("m", lambda: "ok") == "ok"
    assert cache.stats().loads == 1


def test_reentrant_load_of_same_key_raises() -> None:
    cache: ModelCache[str] = ModelCache()

    def loader() -> str:
        return cache.get_or_load("m", lambda: "inner")

    with pytest.raises(RuntimeError, match="re-entrant"):
        call_with_timeout(lambda: cache.get_or_load("m", loader))
    assert "m" not in cache


# -- eviction ------------------------------------------------------------------------------------------


def test_eviction_by_bytes_with_real_models(models: dict[str, object]) -> None:
    small, big = measure_bytes(models["lr_a"]), measure_bytes(models["ridge"])
    assert big > 100 * small  # the sizes really differ, as measured
    evicted: list[str] = []
    # Room for the big model plus one small one, never two small ones beside the big one.
    cache: ModelCache[object] = ModelCache(
        max_bytes=big + small + small // 2, on_evict=lambda k, v: evicted.append(k)
    )
    for name in ("lr_a", "lr_b", "lr_c"):
        cache.get_or_load(name, lambda name=name: models[name])
    assert cache.keys() == ["lr_a", "lr_b", "lr_c"]
    assert cache.get("lr_a") is models["lr_a"]  # touch: lr_b is now least recently used

    cache.get_or_load("ridge", lambda: models["ridge"])
    assert evicted == ["lr_b", "lr_c"]
    assert cache.keys() == ["lr_a", "ridge"]
    assert cache.size_of("ridge") == big
    stats = cache.stats()
    assert stats.bytes_held == cache.size_of("lr_a") + big <= stats.max_bytes
    assert stats.evictions == 2 and stats.models_held == 2


def test_eviction_by_fake_sizer_respects_lru() -> None:
    evicted: list[tuple[str, bytes]] = []
    cache: ModelCache[bytes] = ModelCache(
        max_bytes=100, sizer=len, on_evict=lambda k, v: evicted.append((k, v))
    )
    for key in "abcd":
        cache.put(key, b"x" * 25)
    assert cache.stats().bytes_held == 100 and evicted == []
    assert cache.get("a") is not None  # protect "a"
    cache.put("e", b"y" * 30)  # 130 bytes: must drop "b" (25) then "c" (25)
    assert [k for k, _ in evicted] == ["b", "c"]
    assert cache.keys() == ["d", "a", "e"]
    assert cache.stats().bytes_held == 80
    # A new entry may push out everything else, but never itself.
    cache.put("f", b"z" * 100)
    assert cache.keys() == ["f"]
    assert [k for k, _ in evicted] == ["b", "c", "d", "a", "e"]


def test_eviction_by_count() -> None:
    evicted: list[str] = []
    cache: ModelCache[int] = ModelCache(
        max_models=2, sizer=lambda v: 1, on_evict=lambda k, v: evicted.append(k)
    )
    cache.get_or_load("a", lambda: 1)
    cache.get_or_load("b", lambda: 2)
    assert cache.get_or_load("a", lambda: 99) == 1  # hit: "a" becomes most recent
    cache.get_or_load("c", lambda: 3)
    assert evicted == ["b"]
    assert cache.keys() == ["a", "c"]
    assert cache.stats().evictions == 1


def test_on_evict_called_once_per_entry_outside_the_lock() -> None:
    calls: list[tuple[str, str, int, int]] = []

    def on_evict(key: str, value: str) -> None:
        # Re-entering the cache would deadlock if the callback ran under the (non-reentrant) lock.
        calls.append((key, value, len(cache), cache.stats().evictions))

    cache: ModelCache[str] = ModelCache(max_models=1, sizer=len, on_evict=on_evict)
    call_with_timeout(lambda: cache.put("a", "1"))
    call_with_timeout(lambda: cache.put("b", "2"))  # capacity eviction of a
    assert call_with_timeout(lambda: cache.evict("b")) is True
    assert cache.evict("b") is False  # absent: no callback
    call_with_timeout(lambda: cache.put("c", "3"))
    call_with_timeout(cache.clear)
    assert calls == [("a", "1", 1, 1), ("b", "2", 0, 2), ("c", "3", 0, 3)]
    assert cache.stats().evictions == len(calls)


def test_replacing_a_key_reports_the_old_value() -> None:
    evicted: list[tuple[str, str]] = []
    cache: ModelCache[str] = ModelCache(sizer=len, on_evict=lambda k, v: evicted.append((k, v)))
    cache.put("a", "old")
    cache.put("a", "newer")
    assert evicted == [("a", "old")]
    assert cache.size_of("a") == 5 and cache.stats().bytes_held == 5 and len(cache) == 1


def test_failing_on_evict_does_not_break_the_cache() -> None:
    def on_evict(key: str, value: str) -> None:
        raise RuntimeError("boom")

    cache: ModelCache[str] = ModelCache(max_models=1, sizer=len, on_evict=on_evict)
    cache.put("a", "1")
    assert cache.get_or_load("b", lambda: "2") == "2"  # evicting "a" fails in the callback, logged only
    assert cache.keys() == ["b"]


def test_model_too_large_leaves_cache_unchanged(models: dict[str, object]) -> None:
    evicted: list[str] = []
    big = measure_bytes(models["ridge"])
    cache: ModelCache[object] = ModelCache(max_bytes=big // 2, on_evict=lambda k, v: evicted.append(k))
    cache.get_or_load("lr_a", lambda: models["lr_a"])
    before = (cache.keys(), cache.stats().bytes_held)

    with pytest.raises(ModelTooLarge) as info:
        cache.get_or_load("ridge", lambda: models["ridge"])
    assert (info.value.key, info.value.size, info.value.max_bytes) == ("ridge", big, big // 2)
    with pytest.raises(ModelTooLarge):
        cache.put("ridge", models["ridge"])

    assert (cache.keys(), cache.stats().bytes_held) == before
    assert evicted == [] and "ridge" not in cache
    stats = cache.stats()
    assert (stats.loads, stats.load_failures) == (1, 1)


def test_model_too_large_reaches_waiters() -> None:
    cache: ModelCache[bytes] = ModelCache(max_bytes=10, sizer=len)
    n = 8

    def loader() -> bytes:
        deadline = time.monotonic() + WAIT
        while cache.stats().misses < n and time.monotonic() < deadline:
            time.sleep(0.005)
        return b"x" * 11

    raised: list[BaseException | None] = [None] * n

    def worker(i: int) -> None:
        try:
            cache.get_or_load("big", loader)
        except ModelTooLarge as exc:
            raised[i] = exc

    run_threads(n, worker)
    assert all(exc is raised[0] and exc is not None for exc in raised)
    assert len(cache) == 0


def test_evict_during_load_is_not_undone() -> None:
    cache: ModelCache[str] = ModelCache()
    in_loader, release = threading.Event(), threading.Event()

    def loader() -> str:
        in_loader.set()
        release.wait(WAIT)
        return "stale"

    result: list[str] = []
    t = threading.Thread(target=lambda: result.append(cache.get_or_load("m", loader)), daemon=True)
    t.start()
    assert in_loader.wait(WAIT)
    assert cache.evict("m") is False  # nothing cached yet, but the in-flight load is superseded
    release.set()
    t.join(WAIT)
    assert result == ["stale"]  # the caller still gets its value...
    assert "m" not in cache  # ...but an unloaded model stays unloaded
    assert cache.get_or_load("m", lambda: "fresh") == "fresh"


# -- stats and small API -------------------------------------------------------------------------------


def test_stats_and_get_accounting() -> None:
    cache: ModelCache[str] = ModelCache(max_bytes=1000, max_models=5, sizer=len)
    assert cache.get("missing") is None
    assert cache.stats() == CacheStats(0, 0, 0, 0, 0, 0.0, 0, 0, 1000, 5)

    cache.get_or_load("a", lambda: (time.sleep(0.05), "aaa")[1])
    cache.get("a")
    cache.get_or_load("a", lambda: "never")
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.loads) == (2, 1, 1)
    assert 0.05 <= stats.load_seconds_total < 1.0
    assert (stats.bytes_held, stats.models_held) == (3, 1)
    assert "a" in cache and "b" not in cache and len(cache) == 1
    assert cache.size_of("a") == 3 and cache.size_of("b") is None


def test_invalid_bounds_rejected() -> None:
    with pytest.raises(ValueError):
        ModelCache(max_models=0)
    with pytest.raises(ValueError):
        ModelCache(max_bytes=-1)


# -- measure_bytes -------------------------------------------------------------------------------------


def test_measure_bytes_counts_a_million_float64_array() -> None:
    rng = np.random.default_rng(1)
    model = Ridge().fit(rng.normal(size=(3, 1_000_000)), rng.normal(size=3))
    assert model.coef_.shape == (1_000_000,) and model.coef_.dtype == np.float64
    assert 8_000_000 <= measure_bytes(model) <= 8_500_000


def test_measure_bytes_orders_real_models(models: dict[str, object]) -> None:
    assert measure_bytes(models["lr_a"]) < measure_bytes(models["ridge"])
    assert measure_bytes(models["lr_a"]) == measure_bytes(models["lr_a"])  # deterministic


def test_measure_bytes_falls_back_for_unpicklable_objects() -> None:
    arr = np.zeros(100_000)  # 800 kB owned by the array, counted by sys.getsizeof
    cyclic: list[object] = [arr]
    cyclic.append(cyclic)
    obj = {"fn": lambda: 0, "lock": threading.Lock(), "data": cyclic, "again": arr}
    size = measure_bytes(obj)
    assert 800_000 <= size < 900_000  # the shared array is counted once; the cycle terminates
