"""Process lifecycle of `container/serve`: settings errors, side by side, SIGTERM, 507, crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import joblib
import numpy as np
import psutil
import pytest
from sklearn.linear_model import Ridge

from tests.support import SERVE, Serve, running_pids, running_serve

pytestmark = pytest.mark.mms
ROW = "5.1,3.5,1.4,0.2"


def _invoke_until_ok(serve: Serve, name: str, timeout: float = 30) -> int:
    """Invoke until 200; returns how many requests failed first."""
    failures, deadline = 0, time.monotonic() + timeout
    while True:
        resp = serve.invoke(name, ROW)
        if resp.status_code == 200:
            return failures
        failures += 1
        assert time.monotonic() < deadline, f"{name} did not recover: {resp.status_code} {resp.text}"
        time.sleep(0.2)


def test_port_out_of_mms_range_is_a_clear_error() -> None:
    env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": "40000"}
    proc = subprocess.run([str(SERVE)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "32767" in proc.stderr and "Traceback" not in proc.stderr


def test_two_servers_side_by_side_then_sigterm_leaves_no_process(tmp_path, model_root) -> None:
    with running_serve(tmp_path) as a, running_serve(tmp_path) as b:
        for server in (a, b):
            assert server.load("iris_logreg", model_root / "iris_logreg").status_code == 200
            assert server.load("wine_pipeline", model_root / "wine_pipeline").status_code == 200
            assert server.invoke("iris_logreg", ROW).status_code == 200
        tree = [p.pid for p in psutil.Process(a.proc.pid).children(recursive=True)]
        assert len(tree) >= 6  # java, zygote, and per model a launcher, a backend and a worker
        started = time.monotonic()
        assert a.stop(timeout=30) == 0
        assert time.monotonic() - started < 15
        deadline = time.monotonic() + 5
        while running_pids(tree) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert running_pids(tree) == [], "processes left behind after SIGTERM"
        # the other server is untouched
        assert b.invoke("wine_pipeline", ",".join(["1"] * 13)).status_code == 200


def test_model_that_does_not_fit_the_budget_is_507(tmp_path, model_root) -> None:
    big = tmp_path / "big"
    big.mkdir()
    X = np.random.default_rng(0).normal(size=(20, 300_000))
    joblib.dump(Ridge().fit(X, X[:, 0]), big / "model.joblib")  # ~2.4 MB of coefficients
    with running_serve(tmp_path, MME_MEMORY_BUDGET="1MB") as serve:
        assert serve.load("small", model_root / "iris_logreg").status_code == 200
        resp = serve.load("big", big)
        assert resp.status_code == 507, resp.text
        deadline = time.monotonic() + 5
        while serve.http.get(f"{serve.url}/models/big", timeout=5).status_code != 404:
            assert time.monotonic() < deadline, "model that did not fit is still listed"
            time.sleep(0.05)
        assert serve.invoke("small", ROW).status_code == 200
        assert serve.http.get(f"{serve.url}/ping", timeout=2).status_code == 200
        # after unloading the small one there is still no room for the big one, but the small reloads
        assert serve.unload("small").status_code == 200
        assert serve.load("small", model_root / "iris_logreg").status_code == 200


def test_killed_worker_is_recovered_and_others_unaffected(tmp_path, model_root) -> None:
    with running_serve(tmp_path) as serve:
        for name in ("iris_logreg", "iris_kmeans"):
            assert serve.load(name, model_root / name).status_code == 200
            assert serve.invoke(name, ROW).status_code == 200
        pids = serve.model_pids()
        os.kill(pids["iris_logreg"], signal.SIGKILL)
        assert serve.invoke("iris_kmeans", ROW).status_code == 200
        assert _invoke_until_ok(serve, "iris_logreg") <= 1
        assert serve.model_pids()["iris_logreg"] != pids["iris_logreg"]
        assert serve.model_pids()["iris_kmeans"] == pids["iris_kmeans"]


def test_killed_zygote_is_restarted_and_models_keep_serving(tmp_path, model_root) -> None:
    with running_serve(tmp_path) as serve:
        assert serve.load("iris_logreg", model_root / "iris_logreg").status_code == 200
        zygotes = [p for p in psutil.Process(serve.proc.pid).children()
                   if "sklearn_mme.container.zygote" in " ".join(p.cmdline())]
        assert len(zygotes) == 1
        zygotes[0].kill()
        zygotes[0].wait(10)
        assert serve.invoke("iris_logreg", ROW).status_code == 200
        deadline = time.monotonic() + 60
        while True:
            resp = serve.load("iris_kmeans", model_root / "iris_kmeans")
            if resp.status_code == 200:
                break
            assert time.monotonic() < deadline, resp.text
            serve.unload("iris_kmeans")
            time.sleep(0.5)
        assert serve.invoke("iris_kmeans", ROW).status_code == 200


def test_sigterm_during_traffic_completes_in_flight_requests(tmp_path, model_root) -> None:
    import threading
    from collections import Counter

    import requests

    with running_serve(tmp_path) as serve:
        for name in ("iris_logreg", "iris_kmeans"):
            assert serve.load(name, model_root / name).status_code == 200
        results: Counter = Counter()
        stop = threading.Event()

        def client(k: int) -> None:
            session = requests.Session()
            name = ("iris_logreg", "iris_kmeans")[k % 2]
            while not stop.is_set():  # each request in flight when SIGTERM lands must complete
                try:
                    resp = session.post(f"{serve.url}/models/{name}/invoke", data=ROW,
                                        headers={"Content-Type": "text/csv"}, timeout=30)
                    results[resp.status_code] += 1
                except requests.RequestException as exc:
                    results[type(exc).__name__] += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        time.sleep(1.5)
        started = time.monotonic()
        stop.set()
        serve.proc.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(30)
        assert serve.proc.wait(30) == 0
        assert time.monotonic() - started < 30
        assert set(results) == {200}, results
        assert results[200] > 50


def test_runaway_model_gets_507_and_recovers(tmp_path, model_root, trained) -> None:
    import textwrap

    from sklearn_mme.container import examples

    greedy = examples.write_model_dir(trained["iris_logreg"], tmp_path, "greedy")
    (greedy / "code").mkdir()
    (greedy / "code" / "inference.py").write_text(textwrap.dedent("""
        import numpy as np

        def predict_fn(data, model):
            if data[0][0] > 1000:
                np.ones((64, 1024, 1024))  # 512 MB
            return model.predict(data)
    """))
    with running_serve(tmp_path, MME_WORKER_MEMORY_LIMIT="256MB") as serve:
        assert serve.load("greedy", greedy).status_code == 200
        assert serve.load("other", model_root / "iris_logreg").status_code == 200
        resp = serve.invoke("greedy", "5000,1,1,1")
        assert resp.status_code == 507, resp.text
        assert "Traceback" not in resp.text
        assert serve.invoke("greedy", ROW).status_code == 200
        assert serve.invoke("other", ROW).status_code == 200


def test_workers_per_model_setting(tmp_path, model_root) -> None:
    with running_serve(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS="2") as serve:
        assert serve.load("iris_logreg", model_root / "iris_logreg").status_code == 200
        for _ in range(10):
            assert serve.invoke("iris_logreg", ROW).status_code == 200
        workers = serve.http.get(f"{serve.url}/models/iris_logreg", timeout=10).json()["workers"]
        assert [w["status"] for w in workers] == ["READY", "READY"]
        entries = (serve.run_dir() / "ledger").iterdir()
        ledger = [p.read_text().split()[1] for p in entries if p.name.isdigit()]
        assert ledger.count("iris_logreg") == 1  # loaded once: the second worker is a fork of the first


def _java_threads(serve: Serve) -> int:
    java = next(p for p in psutil.Process(serve.proc.pid).children(recursive=True) if p.name() == "java")
    return java.num_threads()


def test_unloaded_models_threads_go_within_seconds(tmp_path, model_root) -> None:
    """MMS's worker pool and Java's process reaper keep an idle thread 60 s; our plugin (container/java)
    makes it 2 s, so memory comes back soon after unloading many models. /mme reports the plugin's state."""
    with running_serve(tmp_path) as serve:
        status = serve.http.get(f"{serve.url}/mme", timeout=10)
        assert status.status_code == 200, status.text
        assert status.json()["worker_pool_keep_alive_s"] == 2, status.text
        assert status.json()["process_reaper_keep_alive_s"] == 2, status.text
        idle = _java_threads(serve)
        names = [f"m{i}" for i in range(20)]
        for name in names:
            assert serve.load(name, model_root / "iris_logreg").status_code == 200
            assert serve.invoke(name, ROW).status_code == 200
        loaded = _java_threads(serve)
        assert loaded >= idle + 20  # at least one MMS thread per loaded model
        for name in names:
            assert serve.unload(name).status_code == 200
        deadline = time.monotonic() + 20
        while _java_threads(serve) > idle + 5 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _java_threads(serve) <= idle + 5, (idle, loaded, _java_threads(serve))
