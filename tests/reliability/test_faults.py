"""Faults under traffic on a real `container/serve`, beyond tests/integration/test_lifecycle.py (which covers
SIGTERM during traffic, a killed worker between requests, a killed zygote, 507 over the memory budget and the
per-worker memory limit):

- a model unloaded (DELETE) while requests for it are in flight: none may hang; the queued ones get 404 (our
  MMS plugin, container/java), and only the one inside the worker may get MMS's 500 "Worker died.";
- a model's worker killed with SIGKILL while 8 clients send traffic to three models: the model answers again,
  the other two never notice;
- /ping answers 200 (within 2 s) all along.

Every request has a timeout; "hung" means no answer within the container's own response timeout (set to 5 s
here) plus 10 s.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests

from sklearn_mme.container import examples
from tests.reliability.util import PingWatch, fmt_counter
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

RESPONSE_TIMEOUT_S = 5
HANG_S = RESPONSE_TIMEOUT_S + 10
SLOW_PREDICT_S = 0.5

SLOW_CODE = f"""
import time

def predict_fn(data, model):
    time.sleep({SLOW_PREDICT_S})
    return {{"predictions": model.predict(data).tolist()}}
"""


class RequestsHung(AssertionError):
    """Requests that got no answer at all within HANG_S seconds."""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    # MME_BACKEND=zygote: these kill a model's own worker and expect the other models' workers untouched; a
    # host's death and a stuck hosted model are tests/integration/test_hosts.py's.
    env = {"SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": str(RESPONSE_TIMEOUT_S), "MME_BACKEND": "zygote"}
    with running_serve(tmp_path_factory.mktemp("faults"), **env) as server:
        yield server


def _post(session: requests.Session, serve: Serve, name: str, body: bytes, timeout: float = HANG_S) -> tuple:
    """(status or exception name, seconds, body text)"""
    t0 = time.monotonic()
    try:
        resp = session.post(
            f"{serve.url}/models/{name}/invoke",
            data=body,
            headers={"Content-Type": "text/csv"},
            timeout=timeout,
        )
        return resp.status_code, time.monotonic() - t0, resp.text
    except requests.Timeout:
        return "hung", time.monotonic() - t0, ""
    except requests.RequestException as exc:
        return type(exc).__name__, time.monotonic() - t0, ""


def _is_clean_json_error(text: str) -> bool:
    try:
        doc = json.loads(text)
    except ValueError:
        return False
    return isinstance(doc, dict) and "message" in doc and "Traceback" not in text and 'File "' not in text


def test_delete_while_requests_are_in_flight(serve: Serve, tmp_path: Path, trained: dict) -> None:
    slow = examples.write_model_dir(trained["iris_logreg"], tmp_path, "slow")
    (slow / "code").mkdir()
    (slow / "code" / "inference.py").write_text(SLOW_CODE)
    steady = examples.write_model_dir(trained["diabetes_ridge"], tmp_path, "steady")
    assert serve.load("slow", slow).status_code == 200
    assert serve.load("steady", steady).status_code == 200
    row = b"5.1,3.5,1.4,0.2"
    steady_row = ",".join(repr(float(v)) for v in trained["diabetes_ridge"].X[0]).encode()

    in_flight: list[tuple] = []
    steady_results: Counter = Counter()
    stop = threading.Event()
    lock = threading.Lock()

    def slow_client() -> None:
        result = _post(requests.Session(), serve, "slow", row)
        with lock:
            in_flight.append(result)

    def steady_client() -> None:
        session = requests.Session()
        while not stop.is_set():
            status, _, _ = _post(session, serve, "steady", steady_row)
            with lock:
                steady_results[status] += 1

    with PingWatch(serve.url) as ping:
        steadies = [threading.Thread(target=steady_client, daemon=True) for _ in range(2)]
        for t in steadies:
            t.start()
        slows = [threading.Thread(target=slow_client, daemon=True) for _ in range(6)]
        for t in slows:
            t.start()
        time.sleep(SLOW_PREDICT_S / 2)  # one request in the worker, five queued in MMS
        t0 = time.monotonic()
        deleted = serve.unload("slow")
        delete_s = time.monotonic() - t0
        after_delete = _post(requests.Session(), serve, "slow", row)
        for t in slows:
            t.join(HANG_S + 5)
        reload = serve.load("slow", slow)
        after_reload = _post(requests.Session(), serve, "slow", row)
        stop.set()
        for t in steadies:
            t.join(HANG_S + 5)

    outcomes = Counter(status for status, _, _ in in_flight)
    print(
        f"\n[faults] DELETE of a model with 6 requests in flight (1 in its worker, 5 queued, predict "
        f"{SLOW_PREDICT_S}s): DELETE answered {deleted.status_code} in {delete_s * 1e3:.0f} ms"
    )
    for status, seconds, text in sorted(in_flight, key=lambda r: r[1]):
        print(f"[faults]   in-flight request: {status} after {seconds:.2f}s {' '.join(text.split())[:90]}")
    print(
        f"[faults]   a request after the DELETE: {after_delete[0]} {' '.join(after_delete[2].split())[:90]}"
    )
    print(
        f"[faults]   reload {reload.status_code}, then {after_reload[0]}; other model during all this: "
        f"{fmt_counter(steady_results)}; /ping {fmt_counter(ping.results)} (slowest {ping.slowest:.2f}s)"
    )

    assert deleted.status_code == 200, deleted.text
    assert after_delete[0] == 404 and _is_clean_json_error(after_delete[2]), after_delete
    assert reload.status_code == 200 and after_reload[0] == 200, (reload.text, after_reload)
    assert set(steady_results) == {200}, steady_results
    assert ping.healthy and ping.slowest < 2.0, (ping.results, ping.slowest)
    assert len(in_flight) == 6
    if outcomes["hung"]:
        raise RequestsHung(
            f"{outcomes['hung']} of 6 in-flight requests got no answer in {HANG_S}s: {fmt_counter(outcomes)}"
        )
    # The request inside the worker finishes (our plugin's WorkLoadManager lets it before MMS stops the
    # worker; MMS alone answered it 500 "Worker died."), with the right prediction; the queued ones get 404.
    finished = [text for status, _, text in in_flight if status == 200]
    assert outcomes == Counter({200: 1, 404: 5}), fmt_counter(outcomes)
    assert json.loads(finished[0])["predictions"] == [0], finished
    assert all(
        _is_clean_json_error(text) and "ModelNotFoundException" in text
        for status, _, text in in_flight
        if status == 404
    ), in_flight
    # The DELETE waited for that request (about half a predict), not for the queue behind it.
    assert delete_s < SLOW_PREDICT_S + 2.0, delete_s
    # No request answered twice: a second answer on a keep-alive connection would be read as the answer to
    # that client's next request.
    status = serve.http.get(f"{serve.url}/mme", timeout=10).json()
    assert status["unloaded_requests_answered"] == outcomes[404], (status, fmt_counter(outcomes))
    assert status["unloads_waited_for_in_flight"] >= 1, status


def test_delete_waits_for_a_stuck_request_no_longer_than_its_timeout(
    serve: Serve, tmp_path: Path, trained: dict
) -> None:
    """The DELETE lets the request in the worker finish, but a request that never finishes must not hold the
    unload (and the Netty thread it runs on) past the model's response timeout."""
    stuck = examples.write_model_dir(trained["iris_logreg"], tmp_path, "stuck")
    (stuck / "code").mkdir()
    (stuck / "code" / "inference.py").write_text(SLOW_CODE.replace(repr(SLOW_PREDICT_S), "3600"))
    assert serve.load("stuck", stuck).status_code == 200
    results: list[tuple] = []
    client = threading.Thread(
        target=lambda: results.append(_post(requests.Session(), serve, "stuck", b"5.1,3.5,1.4,0.2")),
        daemon=True,
    )
    client.start()
    time.sleep(1.0)
    t0 = time.monotonic()
    deleted = serve.unload("stuck")
    delete_s = time.monotonic() - t0
    client.join(HANG_S + 5)
    print(
        f"\n[faults] DELETE of a model stuck in predict: {deleted.status_code} in {delete_s:.2f}s; "
        f"request: {results}"
    )
    assert deleted.status_code == 200, deleted.text
    assert delete_s < RESPONSE_TIMEOUT_S + 2.0, delete_s
    assert len(results) == 1 and results[0][0] != "hung", results
    assert 500 <= results[0][0] < 600 and _is_clean_json_error(results[0][2]), results  # MMS: "Worker died."
    assert serve.http.get(f"{serve.url}/ping", timeout=2).status_code == 200
    # The DELETE answers once the zygote has reaped the model's worker (its ledger record goes with it);
    # MMS's retry of the timed-out worker (1 s back-off) must not bring it back.
    assert "stuck" not in serve.model_pids()
    time.sleep(2)
    assert "stuck" not in serve.model_pids()
    listed = [m["modelName"] for m in serve.http.get(f"{serve.url}/models", timeout=10).json()["models"]]
    assert "stuck" not in listed, listed


class _Traffic:
    """Clients sending round-robin requests to some models, each answer logged as
    (t, model, status, seconds, text); a 200 with the wrong prediction is logged as "wrong"."""

    def __init__(self, serve: Serve, names: tuple[str, ...], rows: dict, want: dict) -> None:
        self.serve, self.names, self.rows, self.want = serve, names, rows, want
        self.lock = threading.Lock()
        self.log: list[tuple] = []
        self.stop = threading.Event()
        self.t_start = time.monotonic()

    def client(self, k: int) -> None:
        session = requests.Session()
        i = k
        while not self.stop.is_set():
            name = self.names[i % len(self.names)]
            i += 1
            status, seconds, text = _post(session, self.serve, name, self.rows[name])
            if status == 200:
                got = float(json.loads(text)["predictions"][0])
                if not np.isclose(got, self.want[name], rtol=1e-9):
                    status = "wrong"
            if not isinstance(status, int):
                session = requests.Session()
            with self.lock:
                self.log.append((time.monotonic() - self.t_start, name, status, seconds, text))

    def first_ok_after(self, name: str, t: float) -> float | None:
        with self.lock:
            ok = [r[0] for r in self.log if r[1] == name and r[2] == 200 and r[0] > t]
        return ok[0] if ok else None


def _kill_and_wait_recovery(traffic: _Traffic, pid: int, victim: str) -> tuple[float, float | None]:
    """SIGKILL the victim's worker, then keep the traffic going until the victim has answered 200 for
    2 s (at most 30 s). Returns (killed_at, recovered_at) on the traffic's clock."""
    killed_at = time.monotonic() - traffic.t_start
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    recovered_at = None
    while time.monotonic() < deadline:
        recovered_at = recovered_at or traffic.first_ok_after(victim, killed_at + 0.05)
        if recovered_at is not None and time.monotonic() - traffic.t_start > recovered_at + 2:
            break
        time.sleep(0.05)
    return killed_at, recovered_at


def test_sigkill_worker_mid_traffic(serve: Serve, model_root: Path, trained: dict) -> None:
    names = ("iris_logreg", "diabetes_ridge", "wine_pipeline")
    for name in names:
        if name not in serve.model_pids():
            assert serve.load(name, model_root / name).status_code == 200
    victim = "iris_logreg"
    rows = {n: ",".join(repr(float(v)) for v in trained[n].X[0]).encode() for n in names}
    want = {n: float(trained[n].model.predict(trained[n].X[:1])[0]) for n in names}
    pids = serve.model_pids()
    traffic = _Traffic(serve, names, rows, want)

    with PingWatch(serve.url) as ping:
        threads = [threading.Thread(target=traffic.client, args=(k,), daemon=True) for k in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        killed_at, recovered_at = _kill_and_wait_recovery(traffic, pids[victim], victim)
        traffic.stop.set()
        for t in threads:
            t.join(HANG_S + 5)

    log = traffic.log
    after = [r for r in log if r[0] > killed_at]
    victim_after = Counter(r[2] for r in after if r[1] == victim)
    others_all = Counter(r[2] for r in log if r[1] != victim)
    failures = [r for r in after if r[1] == victim and r[2] != 200]
    slowest_other = max((r[3] for r in log if r[1] != victim), default=0.0)
    new_pids = serve.model_pids()
    print(
        f"\n[faults] SIGKILL of {victim}'s worker with 8 clients on 3 models: {len(log)} requests; "
        f"before the kill {sum(1 for r in log if r[0] <= killed_at)}"
    )
    print(
        f"[faults]   {victim} after the kill: {fmt_counter(victim_after)}; first 200 "
        f"{(recovered_at or float('nan')) - killed_at:.2f}s after the kill; failures: "
        + "; ".join(f"{r[2]} {' '.join(r[4].split())[:60]}" for r in failures[:5])
    )
    print(
        f"[faults]   other models: {fmt_counter(others_all)} (slowest {slowest_other:.2f}s); "
        f"/ping {fmt_counter(ping.results)} (slowest {ping.slowest:.2f}s)"
    )
    print(
        f"[faults]   worker pids: {victim} {pids[victim]} -> {new_pids.get(victim)}, others unchanged: "
        f"{all(new_pids.get(n) == pids[n] for n in names if n != victim)}"
    )

    assert recovered_at is not None, f"{victim} did not answer again within 30 s: {victim_after}"
    assert set(others_all) == {200}, others_all
    assert all(new_pids.get(n) == pids[n] for n in names if n != victim)
    assert new_pids.get(victim) not in (None, pids[victim])
    assert "hung" not in victim_after and "wrong" not in victim_after, victim_after
    assert all(isinstance(r[2], int) and _is_clean_json_error(r[4]) for r in failures), failures[:3]
    assert len(failures) <= 8, f"more failed requests than clients: {len(failures)}"
    assert ping.healthy and ping.slowest < 2.0, (ping.results, ping.slowest)
    assert serve.invoke(victim, rows[victim]).status_code == 200
