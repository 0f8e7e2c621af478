"""Issue 13: a model's worker count follows its load (container/java WorkerScaler), through the same path as
MMS's `PUT /models/{name}?min_worker=&max_worker=`.

Real MMS, real zygote and hosts. The model's own code holds a request inside predict until the test opens a
gate, and writes a marker with its pid when one arrives there: so "every worker is busy and a request waits"
is a state the test sets up, and "two workers serve at once" is two markers from two pids, not a timing.
With MME_SCALE_UP_WAIT_MS=0 the policy adds a worker at the arrival that finds every worker busy.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest
import requests

from sklearn_mme.container import examples
from tests.support import Serve, model_with_code, running_pids, running_serve

# The policy adds a worker only while a core is spare (fewer requests in flight than cores): one held
# request leaves one spare on two cores.
pytestmark = [pytest.mark.mms, pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 cores")]
GATED = "777.0,777.0,777.0,777.0"

CODE = """
import os, time
import numpy as np

SIGNALS = {signals!r}

def predict_fn(data, model):
    if data.shape[0] > 1 and np.all(data[0] == 777.0):
        # Held until the test opens the gate; the marker says which process took the request.
        open(os.path.join(SIGNALS, "started-%d-%d" % (os.getpid(), time.monotonic_ns())), "w").close()
        deadline = time.monotonic() + 60
        while not os.path.exists(os.path.join(SIGNALS, "gate")) and time.monotonic() < deadline:
            time.sleep(0.005)
        data = data[1:]
    return model.predict(data)
"""


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, list]:
    """(model dir, signals dir, a CSV body of 3 rows, the predictions a fresh in-process model gives)."""
    root = tmp_path_factory.mktemp("scaling")
    ex = examples.small_model(3)
    rows = ex.X[:3]
    body = "\n".join(",".join(repr(float(v)) for v in row) for row in rows)
    assert len(rows[0]) == 4, "the gate row is written for 4 features"
    signals = root / "signals"
    signals.mkdir()
    model_dir = examples.write_model_dir(ex, root, "gated")
    model_with_code(model_dir, CODE.format(signals=str(signals)))
    return model_dir, signals, body, ex.model.predict(rows).tolist()


def _describe(serve: Serve, name: str) -> dict:
    r = serve.http.get(f"{serve.url}/models/{name}", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    return body[0] if isinstance(body, list) else body


def _workers(serve: Serve, name: str) -> int:
    return len(_describe(serve, name)["workers"])


def _until(what: str, check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def _started(signals: Path) -> list[int]:
    return [int(p.name.split("-")[1]) for p in sorted(signals.glob("started-*"))]


class Held:
    """Gated requests in flight, each in its own thread; open() releases them all."""

    def __init__(self, serve: Serve, name: str, signals: Path, body: str) -> None:
        self.serve, self.name, self.signals, self.body = serve, name, signals, body
        self.answers: list[requests.Response] = []
        self.threads: list[threading.Thread] = []

    def send(self) -> None:
        def run() -> None:
            r = requests.post(f"{self.serve.url}/models/{self.name}/invoke", data=GATED + "\n" + self.body,
                              headers={"Content-Type": "text/csv", "Accept": "application/json"}, timeout=90)
            self.answers.append(r)

        t = threading.Thread(target=run)
        t.start()
        self.threads.append(t)

    def open(self) -> list[requests.Response]:
        (self.signals / "gate").touch()
        for t in self.threads:
            t.join(90)
        return self.answers


def _reset(signals: Path) -> None:
    for p in signals.iterdir():
        p.unlink()


def _predictions(serve: Serve, name: str, body: str) -> list:
    r = serve.invoke(name, body, accept="application/json")
    assert r.status_code == 200, r.text
    return json.loads(r.text)["predictions"]


def _grow_to_two(serve: Serve, signals: Path, body: str, expected: list) -> tuple[int, list[int]]:
    """Holds one request in model m's only worker and sends another: the policy adds a worker. Then two
    held requests are inside predict at once. Returns the pid of the process that served m first (its
    host, with `hosts`) and those of the two processes serving at once."""
    _reset(signals)
    held = Held(serve, "m", signals, body)
    held.send()
    first = _until("the first request inside predict", lambda: _started(signals))[0]
    assert _workers(serve, "m") == 1  # one request, one worker: nothing waits
    held.send()  # arrives with every worker busy: the policy adds one at once (MME_SCALE_UP_WAIT_MS=0)
    _until("a second worker listed", lambda: _workers(serve, "m") == 2)
    # (With `zygote` the added worker is forked from the loaded copy between requests, so only once the
    # held request is answered; a host hands the model to a process of its own at once.)
    answers = held.open()
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert all(json.loads(r.text)["predictions"] == expected for r in answers)

    # Two workers now: two held requests are inside predict at once, in two processes.
    _reset(signals)
    held = Held(serve, "m", signals, body)
    held.send()
    _until("the first request inside predict", lambda: _started(signals))
    held.send()
    both = _until("two requests inside predict at once",
                  lambda: len(_started(signals)) == 2 and _started(signals))
    assert len(set(both)) == 2, f"both requests in one process {both}: the second worker is not serving"
    assert _workers(serve, "m") == 2  # the second found a free worker: no third
    answers = held.open()
    assert [r.status_code for r in answers] == [200, 200], [r.text for r in answers]
    assert all(json.loads(r.text)["predictions"] == expected for r in answers)
    assert first in both
    return first, both


@pytest.mark.parametrize("backend", ["hosts", "zygote"])
def test_busy_model_gets_a_worker_then_goes_back_after_idle(tmp_path, gated, backend) -> None:
    model_dir, signals, body, expected = gated
    _reset(signals)
    env = {"MME_BACKEND": backend, "MME_MAX_WORKERS_PER_MODEL": "2", "MME_SCALE_UP_WAIT_MS": "0",
           "MME_SCALE_DOWN_IDLE_SECONDS": "1"}
    with running_serve(tmp_path, **env) as serve:
        assert serve.load("m", model_dir).status_code == 200
        info = _describe(serve, "m")
        assert (info["minWorkers"], info["maxWorkers"], len(info["workers"])) == (1, 2, 1)
        assert _predictions(serve, "m", body) == expected

        first, both = _grow_to_two(serve, signals, body, expected)

        # No request for the idle window (1 s): back to its minimum, the added worker's process ends.
        _until("back to one worker", lambda: _workers(serve, "m") == 1, timeout=20)
        # The one taken away is the added one: the model's first process (its host, with `hosts`) serves on.
        _until("the added worker's process gone", lambda: running_pids(both) == [first], timeout=20)
        assert _predictions(serve, "m", body) == expected
        info = _describe(serve, "m")
        assert (info["minWorkers"], info["maxWorkers"]) == (1, 2)
        assert "Worker died" not in serve.log()


def test_explicit_put_sets_the_bounds_the_policy_keeps(tmp_path, gated) -> None:
    model_dir, signals, body, expected = gated
    _reset(signals)
    env = {"MME_MAX_WORKERS_PER_MODEL": "2", "MME_SCALE_UP_WAIT_MS": "0", "MME_SCALE_DOWN_IDLE_SECONDS": "1"}
    with running_serve(tmp_path, **env) as serve:
        assert serve.load("m", model_dir).status_code == 200
        put = serve.http.put(f"{serve.url}/models/m?min_worker=2&max_worker=3&synchronous=true", timeout=60)
        assert put.status_code == 200, put.text
        info = _describe(serve, "m")
        assert (info["minWorkers"], info["maxWorkers"], len(info["workers"])) == (2, 3, 2)
        assert _predictions(serve, "m", body) == expected

        bad = serve.http.put(f"{serve.url}/models/m?min_worker=3&max_worker=1", timeout=30)
        assert bad.status_code == 400 and "max_worker" in bad.json()["message"], bad.text
        assert _workers(serve, "m") == 2

        # Pinned at one: a request that finds the worker busy waits for it; no worker is added.
        put = serve.http.put(f"{serve.url}/models/m?min_worker=1&max_worker=1&synchronous=true", timeout=60)
        assert put.status_code == 200, put.text
        _until("down to one worker", lambda: _workers(serve, "m") == 1)
        held = Held(serve, "m", signals, body)
        held.send()
        _until("the first request inside predict", lambda: _started(signals))
        held.send()
        # The second request found the one worker busy: it waits in the queue, the worker list stays one.
        assert _workers(serve, "m") == 1
        answers = held.open()
        assert [r.status_code for r in answers] == [200, 200]
        assert all(json.loads(r.text)["predictions"] == expected for r in answers)
        pids = _started(signals)
        assert len(pids) == 2 and len(set(pids)) == 1, f"pinned to one worker, served by {pids}"
        info = _describe(serve, "m")
        assert (info["minWorkers"], info["maxWorkers"], len(info["workers"])) == (1, 1, 1)

        missing = serve.http.put(f"{serve.url}/models/nope?min_worker=1&max_worker=2", timeout=30)
        assert missing.status_code == 404


@pytest.mark.parametrize("backend", ["hosts", "zygote"])
def test_delete_while_scaled_up_leaves_no_process(tmp_path, gated, backend) -> None:
    model_dir, signals, body, expected = gated
    _reset(signals)
    env = {"MME_BACKEND": backend, "MME_MAX_WORKERS_PER_MODEL": "3", "MME_SCALE_UP_WAIT_MS": "0"}
    with running_serve(tmp_path, **env) as serve:
        assert serve.load("m", model_dir).status_code == 200
        first, pids = _grow_to_two(serve, signals, body, expected)
        assert serve.unload("m").status_code == 200
        # The DELETE answers once the model's host dropped it and its own workers were reaped.
        assert "m" not in serve.model_pids()
        if backend == "zygote":
            _until("no worker process left", lambda: running_pids(set(pids)) == [], timeout=30)
        else:
            # The model's first worker is in a shared host, which serves on; its added one had a process
            # of its own, which ends.
            _until("the added worker's process gone", lambda: running_pids(set(pids)) == [first], timeout=30)
        assert serve.invoke("m", body).status_code == 404  # what a client sees, at once


@pytest.mark.parametrize("backend", ["hosts", "zygote"])
def test_scaling_down_under_traffic_fails_no_request(tmp_path, gated, backend) -> None:
    """PUTs move the model between 1 and 2 workers while 4 clients invoke it without pause: a worker taken
    away finishes its request and gives back what it picked up, so every answer is a correct 200."""
    model_dir, signals, body, expected = gated
    _reset(signals)
    with running_serve(tmp_path, MME_BACKEND=backend, MME_MAX_WORKERS_PER_MODEL="2") as serve:
        assert serve.load("m", model_dir).status_code == 200
        stop = threading.Event()
        bad: list[str] = []
        counts = [0] * 4

        def client(k: int) -> None:
            http = requests.Session()
            while not stop.is_set():
                r = http.post(f"{serve.url}/models/m/invoke", data=body, timeout=60,
                              headers={"Content-Type": "text/csv", "Accept": "application/json"})
                if r.status_code != 200 or json.loads(r.text)["predictions"] != expected:
                    bad.append(f"{r.status_code} {r.text[:200]}")
                counts[k] += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            for n in (2, 1, 2, 1, 2, 1):
                put = serve.http.put(f"{serve.url}/models/m?min_worker={n}&max_worker={n}&synchronous=true",
                                     timeout=60)
                assert put.status_code == 200, put.text
                _until(f"{n} workers", lambda n=n: _workers(serve, "m") == n)
                before = sum(counts)
                _until("requests answered at this size", lambda b=before: sum(counts) >= b + 20)
        finally:
            stop.set()
            for t in threads:
                t.join(60)
        assert bad == [], bad[:5]
        assert sum(counts) > 100
        assert "Worker died" not in serve.log()


def test_a_busy_stretch_with_no_further_request_still_adds_a_worker(tmp_path, gated) -> None:
    """With a wait of 300 ms, the request that finds the worker busy arms a timer: no later invoke is
    needed for the model to grow once every worker has stayed busy that long."""
    model_dir, signals, body, expected = gated
    _reset(signals)
    env = {"MME_MAX_WORKERS_PER_MODEL": "2", "MME_SCALE_UP_WAIT_MS": "300"}
    with running_serve(tmp_path, **env) as serve:
        assert serve.load("m", model_dir).status_code == 200
        held = Held(serve, "m", signals, body)
        held.send()
        _until("the first request inside predict", lambda: _started(signals))
        held.send()  # waits: the stretch starts here; nothing else arrives
        both = _until("two requests inside predict at once",
                      lambda: len(_started(signals)) == 2 and _started(signals))
        assert len(set(both)) == 2
        assert _workers(serve, "m") == 2
        answers = held.open()
        assert all(json.loads(r.text)["predictions"] == expected for r in answers)
