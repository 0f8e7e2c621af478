"""The start-up warm-up (container/java Warmup.java, MME_WARMUP_LOADS): GET /ping answers 200 only once the
container has loaded and unloaded a built-in model that many times, below the HTTP layer, and nothing of
those loads is left to see. Real MMS, zygote and hosts."""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
import requests

from sklearn_mme.container import ports
from tests.support import running_serve

pytestmark = pytest.mark.timeout(300)

NAME = "mme-start-up-warm-up"  # Warmup.NAME


@pytest.mark.parametrize(("setting", "loads"), [("", 100), ("0", 0)])  # "": the default (conftest sets 8)
def test_ping_answers_200_once_the_warm_up_is_over_and_leaves_nothing(
        setting: str, loads: int, tmp_path: Path) -> None:
    with running_serve(tmp_path, MME_WARMUP_LOADS=setting) as serve:  # yielded on the first 200 of /ping
        mme = serve.http.get(f"{serve.url}/mme", timeout=10).json()
        assert mme["warm_up_done"] is True and mme["warm_up_loads"] == loads, mme
        assert serve.http.get(f"{serve.url}/models", timeout=10).json()["models"] == []
        assert NAME not in serve.http.get(f"{serve.url}/metrics", timeout=10).text
        # The spare launchers' counts are the users' loads only.
        assert mme["loads_from_a_spare_launcher"] == mme["loads_without_a_spare_launcher"] == 0, mme
        java = next(p for p in psutil.Process(serve.proc.pid).children() if "java" in p.name())
        assert not [p.pid for p in java.children() if NAME in " ".join(p.cmdline())]
        ledger = serve.run_dir() / "ledger"
        assert not [f for f in ledger.iterdir() if NAME in f.read_text(errors="replace")]
        if loads:
            assert f"load path warmed up with {loads} loads" in serve.log()


def test_ping_answers_503_while_the_load_path_warms_up(tmp_path: Path) -> None:
    """A warm-up longer than its 10 s budget: /ping answers 503 with one line from its very first answer (our
    endpoint is in place before MMS listens), 200 once the warm-up is over; HEAD /ping the same status."""
    with running_serve(tmp_path, ready=False, MME_WARMUP_LOADS="10000") as serve:
        deadline = time.monotonic() + 60
        while True:
            assert time.monotonic() < deadline and serve.proc.poll() is None
            try:
                first = requests.get(f"{serve.url}/ping", timeout=5)
                break
            except requests.ConnectionError:  # not listening yet
                time.sleep(0.01)
        started = time.monotonic()
        assert first.status_code == 503, first.text
        assert first.json()["message"] == "The container is starting: its load path is warming up"
        assert requests.get(f"{serve.url}/mme", timeout=5).json()["warm_up_done"] is False
        while requests.get(f"{serve.url}/metrics", timeout=5).status_code != 200:
            time.sleep(0.02)  # until the request guard, which answers HEAD /ping, is on every connection
        assert requests.head(f"{serve.url}/ping", timeout=5).status_code == 503
        ports.wait_for_ping(serve.url, 60, lambda: serve.proc.poll() is None, interval=0.05)
        assert time.monotonic() - started < 30  # the budget ended it, not the 10,000 loads
        mme = requests.get(f"{serve.url}/mme", timeout=5).json()
        assert mme["warm_up_done"] is True and 0 < mme["warm_up_loads"] < 10_000, mme
        assert "start-up warm-up stopped after" in serve.log()
        assert requests.head(f"{serve.url}/ping", timeout=5).status_code == 200
        assert requests.get(f"{serve.url}/ping", timeout=5).json() == {"status": "Healthy"}


def test_ping_answers_200_only_once_every_new_connection_is_guarded(tmp_path: Path) -> None:
    """Without a warm-up, /ping still waits for the plugin's per-connection handlers (request guard,
    metrics): a client told "ready" opens its connections at once, and one opened before them would go
    unguarded and uncounted. So at the first 200 of /ping, GET /metrics (503 until they are in) is 200."""
    with running_serve(tmp_path, ready=False, MME_WARMUP_LOADS="0") as serve:
        deadline = time.monotonic() + 60
        answers = []
        while not answers or answers[-1] != 200:
            assert time.monotonic() < deadline and serve.proc.poll() is None, answers
            try:
                answers.append(requests.get(f"{serve.url}/ping", timeout=5).status_code)
            except requests.ConnectionError:  # not listening yet
                time.sleep(0.005)
        assert requests.get(f"{serve.url}/metrics", timeout=5).status_code == 200
        assert set(answers) <= {503, 200}, answers
