"""A DELETE draining a busy model must not hold `/ping` (issue 14 item 5), on a real `container/serve`.

MMS ran the DELETE on a Netty event loop, and the unload waits for the request inside the model's worker:
every connection on that loop waited with it (2 of 8 fresh pings took 58.8 s). SageMaker fails an instance
whose ping takes over 2 s, and it DELETEs models itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

PREDICT_S = 6.0
SLOW_CODE = """
import pathlib, time

def predict_fn(data, model):
    pathlib.Path({marker!r}).touch()
    time.sleep({seconds})
    return {{"predictions": [1] * len(data)}}
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with running_serve(tmp_path_factory.mktemp("unload-off-loop"),
                       SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS="10") as server:
        yield server


def fresh_ping(url: str) -> tuple[int, float]:
    """GET /ping on a new connection: status and seconds taken."""
    t0 = time.monotonic()
    with requests.Session() as s:
        status = s.get(url + "/ping", timeout=30).status_code
    return status, time.monotonic() - t0


@pytest.mark.timeout(180)
def test_ping_answers_while_delete_drains(serve: Serve, tmp_path: Path, trained: dict) -> None:
    ex = trained["iris_logreg"]
    marker = tmp_path / "in-predict"
    model_dir = examples.write_model_dir(ex, tmp_path / "models", "slow")
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(SLOW_CODE.format(marker=str(marker), seconds=PREDICT_S))
    assert serve.load("slow", model_dir).status_code == 200
    row = ",".join(repr(float(v)) for v in ex.X[0])

    answers: dict[str, requests.Response] = {}

    def invoke() -> None:
        with requests.Session() as s:
            answers["invoke"] = s.post(f"{serve.url}/models/slow/invoke", data=row,
                                       headers={"Content-Type": "text/csv"}, timeout=60)

    def delete() -> None:
        with requests.Session() as s:
            answers["delete"] = s.delete(f"{serve.url}/models/slow", timeout=60)

    invoking = threading.Thread(target=invoke)
    invoking.start()
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline, "predict never started"
        time.sleep(0.02)
    deleting = threading.Thread(target=delete)
    deleting.start()
    time.sleep(0.5)  # the DELETE is now waiting for the request in the worker

    with ThreadPoolExecutor(8) as pool:
        pings = list(pool.map(lambda _: fresh_ping(serve.url), range(8)))
    still_draining = deleting.is_alive()

    invoking.join(60)
    deleting.join(60)
    assert [status for status, _ in pings] == [200] * 8
    assert max(seconds for _, seconds in pings) < 2.0, pings
    assert still_draining, "the DELETE was answered before the pings: nothing was tested"
    assert answers["invoke"].status_code == 200, answers["invoke"].text
    assert answers["delete"].status_code == 200, answers["delete"].text
    assert "unregistered" in answers["delete"].json()["status"]
    assert serve.http.get(f"{serve.url}/models/slow", timeout=10).status_code == 404


def test_delete_of_unknown_model_is_404(serve: Serve) -> None:
    resp = serve.unload("never-loaded")
    assert resp.status_code == 404
    assert resp.json()["message"] == "Model not found: never-loaded"
