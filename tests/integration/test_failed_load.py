"""SageMaker's memory loop on a real `container/serve`: a failed load is answered with the model already
unregistered (SageMaker retries the same POST at once, and takes a 409 for "loaded"), and a model being
(re)loaded makes its invokes wait, never 503.

No sleeps between an answer and the requests that check it: the state must be right at the moment of the
answer. The zygote backend only (each failed load costs ~30 ms there, ~1 s with a fresh interpreter).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

ROUNDS = 50
ROW = "5.1,3.5,1.4,0.2"


@pytest.fixture(scope="module")
def failing(tmp_path_factory: pytest.TempPathFactory, trained: dict) -> dict[str, Path]:
    """One model directory per failure class (besides a missing path and the memory budget)."""
    root = tmp_path_factory.mktemp("failing")
    corrupt = root / "corrupt"
    corrupt.mkdir()
    (corrupt / "model.joblib").write_bytes(b"this is not a joblib file")
    out = {"corrupt artifact": corrupt, "missing path": root / "does-not-exist"}
    for label, code in (
        ("model_fn raises", "def model_fn(model_dir):\n    raise ValueError('no model for you')\n"),
        ("MemoryError", "def model_fn(model_dir):\n    raise MemoryError()\n"),
    ):
        d = examples.write_model_dir(trained["iris_logreg"], root, label.replace(" ", "_"))
        (d / "code").mkdir()
        (d / "code" / "inference.py").write_text(code)
        out[label] = d
    out["good"] = examples.write_model_dir(trained["iris_logreg"], root, "good")
    return out


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with running_serve(tmp_path_factory.mktemp("failed-load")) as server:
        yield server


@pytest.fixture(scope="module")
def full_serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    """A container whose memory budget fits no model: every load answers 507."""
    with running_serve(tmp_path_factory.mktemp("failed-load-budget"), MME_MEMORY_BUDGET="1") as server:
        yield server


def _listed(serve: Serve) -> set[str]:
    return {m["modelName"] for m in serve.http.get(f"{serve.url}/models", timeout=10).json()["models"]}


class Invoker(threading.Thread):
    """Invokes one model name in a loop until stopped, counting the statuses."""

    def __init__(self, serve: Serve, name: str) -> None:
        super().__init__(daemon=True)
        self.serve, self.name = serve, name
        self.seen: Counter = Counter()
        self.stop = threading.Event()

    def run(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            resp = session.post(f"{self.serve.url}/models/{self.name}/invoke", data=ROW,
                                headers={"Content-Type": "text/csv"}, timeout=60)
            self.seen[resp.status_code] += 1

    def __enter__(self) -> Invoker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(70)


def _fail_repeatedly(serve: Serve, name: str, path: Path, status: int) -> Counter:
    """ROUNDS times: a load that fails, then at once an invoke and the same POST again (SageMaker's
    retry), which must be a fresh attempt failing the same way. Returns every status seen."""
    seen: Counter = Counter()
    reasons = set()
    for _ in range(ROUNDS):
        first = serve.load(name, path)
        invoke = serve.invoke(name, ROW)
        retry = serve.load(name, path)
        listed = name in _listed(serve)
        seen.update([("load", first.status_code), ("invoke", invoke.status_code),
                     ("retry", retry.status_code), ("listed", listed)])
        reasons.add(first.json().get("message"))
    print(f"\n[failed-load] {name}: {dict(seen)}; reasons {sorted(map(str, reasons))[:2]}")
    assert seen == Counter({("load", status): ROUNDS, ("retry", status): ROUNDS, ("invoke", 404): ROUNDS,
                            ("listed", False): ROUNDS}), seen
    assert "Failed to start workers" not in reasons and None not in reasons, reasons
    return seen


@pytest.mark.parametrize(
    ("label", "status"),
    [("corrupt artifact", 400), ("missing path", 404), ("model_fn raises", 400), ("MemoryError", 507)],
)
def test_failed_load_is_unregistered_before_its_answer(
    serve: Serve, failing: dict[str, Path], label: str, status: int
) -> None:
    name = "f-" + label.replace(" ", "-")
    with Invoker(serve, name) as background:  # invokes that arrive during the loads, too
        _fail_repeatedly(serve, name, failing[label], status)
    assert set(background.seen) == {404}, background.seen
    # the same name loads once the artifact is right: nothing of the failures is left behind
    assert serve.load(name, failing["good"]).status_code == 200
    assert serve.invoke(name, ROW).status_code == 200
    assert serve.unload(name).status_code == 200


def test_failed_load_reason_is_in_the_body(serve: Serve, failing: dict[str, Path]) -> None:
    body = serve.load("f-reason", failing["model_fn raises"]).json()
    assert body["code"] == 400 and "no model for you" in body["message"], body
    body = serve.load("f-reason", failing["corrupt artifact"]).json()
    assert "model.joblib" in body["message"], body


def test_over_memory_budget_is_unregistered_before_its_507(
    full_serve: Serve, failing: dict[str, Path]
) -> None:
    with Invoker(full_serve, "f-budget") as background:
        _fail_repeatedly(full_serve, "f-budget", failing["good"], 507)
    assert set(background.seen) == {404}, background.seen


def test_delete_and_reload_under_traffic_is_200_or_404(serve: Serve, failing: dict[str, Path]) -> None:
    """4 clients invoke one name while it is unloaded and loaded again: an invoke meets the model loaded
    (200), unregistered (404) or loading (it waits: 200), never MMS's 503 "No worker is available"."""
    name = "reloaded"
    assert serve.load(name, failing["good"]).status_code == 200
    clients = [Invoker(serve, name) for _ in range(4)]
    for c in clients:
        c.start()
    t0 = time.monotonic()
    reloads = 0
    try:
        while reloads < 40 or time.monotonic() - t0 < 3:
            assert serve.unload(name).status_code == 200
            assert serve.load(name, failing["good"]).status_code == 200
            reloads += 1
    finally:
        for c in clients:
            c.stop.set()
        for c in clients:
            c.join(70)
    seen = sum((c.seen for c in clients), Counter())
    print(f"\n[failed-load] {reloads} DELETE + reload under 4 clients: {dict(seen)}")
    assert set(seen) <= {200, 404}, seen
    assert seen[200] > 0, seen
    assert serve.unload(name).status_code == 200
