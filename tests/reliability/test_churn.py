"""Churn under load through the harness: 50 small models in a directory store, `--max-models 10`, 8 concurrent
clients, 20,000 requests with Zipf-skewed model choice. Every answer must be the model's own in-process answer
(predictions and probabilities, so a mix-up between models would show), zero 5xx, never more than 10 loaded.

The model choice is a truncated Zipf law over the 50 models, P(rank k) ~ k^-s, seeded. s defaults to 1.5
(rank 1 gets 43% of the traffic, the top 10 together 86%); MME_CHURN_ZIPF_S overrides it (s = 1.2 spreads the
traffic more, so there are more loads and the run takes about twice as long on a 2-core machine).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import requests

from sklearn_mme.container import examples
from sklearn_mme.harness.metrics import sample_sum
from sklearn_mme.harness.packaging import package
from tests.reliability.util import (
    RunningHarness,
    fmt_counter,
    metrics,
    pct,
    start_harness,
    stop_harness,
)

pytestmark = pytest.mark.mms

N_MODELS = 50
MAX_MODELS = 10
CLIENTS = 8
TOTAL = 20_000
SEED = 6
ZIPF_S = float(os.environ.get("MME_CHURN_ZIPF_S", "1.5"))
TIME_LIMIT_S = 900  # a hard bound for the whole run; the expected time is a few minutes


def zipf_choices(n_models: int, total: int, s: float, seed: int) -> np.ndarray:
    p = np.arange(1, n_models + 1, dtype=float) ** -s
    return np.random.default_rng(seed).choice(n_models, size=total, p=p / p.sum())


@pytest.mark.timeout(TIME_LIMIT_S + 120)  # the project's default pytest timeout (300 s) is too short for this
def test_churn_20000_requests_50_models_10_loaded(tmp_path: Path) -> None:
    models = [examples.small_model(seed) for seed in range(N_MODELS)]
    store = tmp_path / "store"
    for ex in models:
        package(examples.write_model_dir(ex, tmp_path / "src"), store / f"{ex.name}.tar.gz")
    keys = [f"{ex.name}.tar.gz" for ex in models]
    bodies = [json.dumps({"instances": ex.X.tolist()}).encode() for ex in models]
    want_pred = [ex.model.predict(ex.X).tolist() for ex in models]
    want_proba = [ex.model.predict_proba(ex.X) for ex in models]
    # The answers differ between models, so an answer from the wrong model cannot pass as right.
    assert len({np.round(p, 12).tobytes() for p in want_proba}) == N_MODELS
    choices = zipf_choices(N_MODELS, TOTAL, ZIPF_S, SEED)

    h = start_harness(tmp_path, store, "--max-models", str(MAX_MODELS))
    try:
        result = _drive(h, keys, bodies, want_pred, want_proba, choices)
        fam = metrics(h.url)
    finally:
        status = stop_harness(h)
    hits = sample_sum(fam, "mme_model_cache_hit_total")
    misses = sample_sum(fam, "mme_model_cache_miss_total")
    unloads = sample_sum(fam, "mme_model_unloading_seconds_count")
    loads = sample_sum(fam, "mme_model_loading_seconds_count")
    load_s = sample_sum(fam, "mme_model_loading_seconds_sum")
    unload_s = sample_sum(fam, "mme_model_unloading_seconds_sum")
    lat, lat_hit, lat_miss = result["lat"], result["lat_hit"], result["lat_miss"]
    ranks = Counter(int(c) for c in choices)
    top10 = sum(n for _, n in ranks.most_common(MAX_MODELS)) / TOTAL

    print(
        f"\n[churn] {TOTAL} requests, {CLIENTS} clients, {N_MODELS} models, max {MAX_MODELS} loaded, "
        f"truncated Zipf s={ZIPF_S} (seed {SEED}; {len(ranks)} models requested, top 10 = {top10:.0%})"
    )
    print(
        f"[churn] wall {result['wall']:.1f}s, {TOTAL / result['wall']:.0f} req/s; statuses "
        f"{fmt_counter(result['statuses'])}; wrong answers {len(result['wrong'])}"
    )
    print(
        f"[churn] latency ms: all p50 {pct(lat, 50) * 1e3:.1f} p99 {pct(lat, 99) * 1e3:.1f} max "
        f"{max(lat) * 1e3:.0f}; hits p50 {pct(lat_hit, 50) * 1e3:.1f} p99 {pct(lat_hit, 99) * 1e3:.1f}; "
        f"misses p50 {pct(lat_miss, 50) * 1e3:.1f} p99 {pct(lat_miss, 99) * 1e3:.1f}"
    )
    print(
        f"[churn] /metrics: cache hits {hits:.0f}, misses {misses:.0f}, hit rate "
        f"{hits / max(hits + misses, 1):.1%}; "
        f"loads {loads:.0f} (mean {load_s / max(loads, 1) * 1e3:.0f} ms), "
        f"unloads {unloads:.0f} (mean {unload_s / max(unloads, 1) * 1e3:.1f} ms); "
        f"max mme_loaded_model_count seen {result['max_loaded']:.0f}"
    )

    assert status == 0, "the harness did not stop cleanly"
    assert result["done"] == TOTAL, f"only {result['done']} of {TOTAL} requests finished in time"
    assert not result["wrong"], result["wrong"][:5]
    assert set(result["statuses"]) == {200}, result["statuses"]
    assert hits + misses == TOTAL
    assert result["max_loaded"] <= MAX_MODELS
    assert unloads >= loads - MAX_MODELS  # every load beyond the first 10 made room by unloading one


@dataclass
class _Tally:
    """What the clients saw, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    statuses: Counter = field(default_factory=Counter)
    wrong: list[tuple] = field(default_factory=list)
    lat: list[float] = field(default_factory=list)
    lat_hit: list[float] = field(default_factory=list)
    lat_miss: list[float] = field(default_factory=list)
    done: int = 0

    def failed(self, exc: requests.RequestException) -> None:
        with self.lock:
            self.statuses[type(exc).__name__] += 1
            self.done += 1

    def answered(self, resp: requests.Response, took: float, ok: bool, key: str) -> None:
        with self.lock:
            self.done += 1
            self.statuses[resp.status_code] += 1
            self.lat.append(took)
            (self.lat_hit if resp.headers.get("X-Mme-Cache") == "hit" else self.lat_miss).append(took)
            if not ok:
                self.wrong.append((key, resp.status_code, resp.text[:200]))


def _right_answer(resp: requests.Response, want_pred: list, want_proba: np.ndarray) -> bool:
    if resp.status_code != 200:
        return False
    answer = resp.json()
    return answer.get("predictions") == want_pred and np.allclose(
        answer.get("probabilities"), want_proba, rtol=1e-9, atol=1e-12
    )


class _LoadedSampler(threading.Thread):
    """The most models the harness's mme_loaded_model_count gauge showed, sampled every 0.5 s."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.max_loaded = 0.0
        self.stopping = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.stopping.wait(0.5):
            try:
                text = session.get(self.url + "/metrics", timeout=5).text
            except requests.RequestException:
                continue
            for line in text.splitlines():
                if line.startswith("mme_loaded_model_count "):
                    self.max_loaded = max(self.max_loaded, float(line.split()[1]))


def _drive(
    h: RunningHarness,
    keys: list[str],
    bodies: list[bytes],
    want_pred: list,
    want_proba: list,
    choices: np.ndarray,
) -> dict:
    tally = _Tally()
    deadline = time.monotonic() + TIME_LIMIT_S

    def client(k: int) -> None:
        session = requests.Session()
        for i in range(k, len(choices), CLIENTS):
            if time.monotonic() > deadline:
                return
            m = int(choices[i])
            t0 = time.perf_counter()
            try:
                resp = h.invoke(session, keys[m], bodies[m], "application/json", timeout=120)
            except requests.RequestException as exc:
                tally.failed(exc)
                session = requests.Session()
                continue
            took = time.perf_counter() - t0
            tally.answered(resp, took, _right_answer(resp, want_pred[m], want_proba[m]), keys[m])

    sampler = _LoadedSampler(h.url)
    sampler.start()
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(deadline - time.monotonic(), 0) + 130)
    wall = time.monotonic() - started
    sampler.stopping.set()
    sampler.join(10)
    return {
        "statuses": tally.statuses,
        "wrong": tally.wrong,
        "lat": tally.lat,
        "lat_hit": tally.lat_hit,
        "lat_miss": tally.lat_miss,
        "done": tally.done,
        "wall": wall,
        "max_loaded": sampler.max_loaded,
    }
