"""A DELETE and a load of the same name that overlap (issue 14, the churn hang), on a real `container/serve`.

MMS keeps a model's workers under its name. While a DELETE drained the old model (its name already free), a
new load of the name found the old workers there and started none: it answered 200, and every invoke of it
then waited forever (the first test here; it failed so before the fix). A DELETE that meets a model still
loading waits for the load, as for a request inside its worker: stopped mid-connect, MMS's worker left the
load unanswered. These are what `tests/reliability/test_churn_same_names.py` hit at random.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

CONSTANT_CODE = """
import time

def predict_fn(data, model):
    time.sleep({sleep})
    return {{"predictions": [{value}] * len(data)}}
"""
SLOW_LOAD_CODE = """
import os
import time

import joblib

def model_fn(model_dir):
    time.sleep(2)
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def model_dir(tmp: Path, trained: dict, name: str, code: str) -> Path:
    path = examples.write_model_dir(trained["iris_logreg"], tmp / "models", name)
    (path / "code").mkdir()
    (path / "code" / "inference.py").write_text(code)
    return path


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Serve:
    with running_serve(tmp_path_factory.mktemp("reload")) as server:
        yield server


@pytest.fixture()
def row(trained: dict) -> str:
    return ",".join(repr(float(v)) for v in trained["iris_logreg"].X[0])


def invoke(serve: Serve, name: str, row: str, timeout: float = 15) -> requests.Response:
    return requests.post(f"{serve.url}/models/{name}/invoke", data=row, headers={"Content-Type": "text/csv"},
                         timeout=timeout)


def test_a_load_during_the_unload_drain_of_the_same_name_serves_the_new_model(
        serve: Serve, tmp_path: Path, trained: dict, row: str) -> None:
    old = model_dir(tmp_path, trained, "old", CONSTANT_CODE.format(sleep=3, value=1))
    new = model_dir(tmp_path, trained, "new", CONSTANT_CODE.format(sleep=0, value=2))
    assert serve.load("m", old).status_code == 200
    with ThreadPoolExecutor(2) as pool:
        busy = pool.submit(invoke, serve, "m", row)  # inside the old model's 3 s predict
        time.sleep(0.5)
        deleting = pool.submit(requests.delete, f"{serve.url}/models/m", timeout=15)
        time.sleep(0.5)  # the DELETE now drains the old model, its name already free
        assert not deleting.done()
        loaded = requests.post(f"{serve.url}/models", json={"model_name": "m", "url": str(new)}, timeout=15)
        assert loaded.status_code == 200, loaded.text
        fresh = invoke(serve, "m", row, timeout=10)  # before the fix: no answer at all
        assert fresh.status_code == 200 and json.loads(fresh.content)["predictions"] == [2], fresh.text
        assert not deleting.done()  # the old model's drain was still under way meanwhile
        first = busy.result()
        assert first.status_code == 200 and json.loads(first.content)["predictions"] == [1]
        assert deleting.result().status_code == 200
    # The old model's clean-up left the new model's workers alone.
    after = invoke(serve, "m", row)
    assert after.status_code == 200 and json.loads(after.content)["predictions"] == [2], after.text
    assert serve.unload("m").status_code == 200


def test_a_delete_that_overtakes_a_load_waits_for_it(serve: Serve, tmp_path: Path, trained: dict,
                                                     row: str) -> None:
    slow = model_dir(tmp_path, trained, "slowload", SLOW_LOAD_CODE)
    answers: dict[str, requests.Response] = {}

    def load() -> None:
        answers["load"] = requests.post(f"{serve.url}/models", json={"model_name": "s", "url": str(slow)},
                                        timeout=30)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(0.7)  # inside model_fn's 2 s
    deleted = requests.delete(f"{serve.url}/models/s", timeout=30)
    loader.join(30)
    # The load finished (200), then the DELETE unloaded it (200).
    assert answers["load"].status_code == 200, answers["load"].text
    assert deleted.status_code == 200, deleted.text
    assert invoke(serve, "s", row).status_code == 404
    assert serve.load("s", slow).status_code == 200  # nothing of it is left behind to conflict
    assert invoke(serve, "s", row).status_code == 200
    assert serve.unload("s").status_code == 200
