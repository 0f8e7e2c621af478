"""One copy of a model however many workers (issue 13): with SAGEMAKER_MODEL_SERVER_WORKERS=4 the model is
loaded once, its other workers are forks of the one that loaded it, all four answer, DELETE ends them all."""

from __future__ import annotations

import json
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import joblib
import psutil
import pytest
import requests

from bench.models import big_forest, to_csv
from tests.support import running_serve

pytestmark = pytest.mark.mms
WORKERS = 4

# model_fn leaves a line per call, and every answer says which worker gave it.
INFERENCE_PY = textwrap.dedent("""
    import json
    import os

    import joblib

    def model_fn(model_dir):
        with open(os.path.join(model_dir, "model_fn_calls"), "a") as f:
            f.write(f"{os.getpid()}\\n")
        return joblib.load(os.path.join(model_dir, "model.joblib"))

    def predict_fn(data, model):
        return model.predict(data)

    def output_fn(prediction, accept):
        return json.dumps({"pid": os.getpid(), "predictions": prediction.tolist()}), "application/json"
""")


@pytest.fixture(scope="module")
def forest_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes, list[int]]:
    model, rows = big_forest()
    root = tmp_path_factory.mktemp("forest") / "forest"
    (root / "code").mkdir(parents=True)
    joblib.dump(model, root / "model.joblib")
    assert (root / "model.joblib").stat().st_size > 10_000_000  # the big model of the issue
    (root / "code" / "inference.py").write_text(INFERENCE_PY)
    return root, to_csv(rows), [int(p) for p in model.predict(rows)]


def _alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def test_four_workers_share_one_load_and_go_with_delete(tmp_path, forest_dir) -> None:
    model_dir, body, expected = forest_dir
    with running_serve(tmp_path, SAGEMAKER_MODEL_SERVER_WORKERS=str(WORKERS)) as serve:
        assert serve.load("forest", model_dir).status_code == 200
        url = f"{serve.url}/models/forest/invoke"

        def ask(_: int) -> int:
            with requests.Session() as http:
                resp = http.post(url, data=body, headers={"Content-Type": "text/csv"}, timeout=60)
            assert resp.status_code == 200, resp.text
            answer = json.loads(resp.text)
            assert answer["predictions"] == expected  # every worker answers with the same model
            return answer["pid"]

        pids: set[int] = set()
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(8) as pool:
            while len(pids) < WORKERS:  # MMS hands requests to idle workers: enough at once reach all four
                assert time.monotonic() < deadline, f"only workers {pids} answered"
                pids.update(pool.map(ask, range(32)))
        assert len(pids) == WORKERS
        calls = (model_dir / "model_fn_calls").read_text().split()
        assert len(calls) == 1, f"model_fn ran {len(calls)} times: {calls}"
        loader = int(calls[0])
        assert loader in pids
        # The other three are forks of the loader (re-parented to the zygote), not fresh loads.
        zygote = psutil.Process(loader).ppid()
        assert {psutil.Process(pid).ppid() for pid in pids} == {zygote}

        assert serve.unload("forest").status_code == 200
        deadline = time.monotonic() + 5
        while _alive(pids) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _alive(pids) == set(), "workers left after DELETE"
        assert serve.invoke("forest", body).status_code == 404
