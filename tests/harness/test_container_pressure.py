"""The harness with the container's own limits: no `--max-models`, no `--memory-budget`, so the container's
507 (its MME_MEMORY_BUDGET) and 409 are all the harness has to go on, as on SageMaker.

- 507: unload the least recently used model and retry the load; a refused model is never counted as loaded.
- 409: never taken as "loaded": the harness asks the container what it holds and loads again when needed.

Each check runs the real `mme-local serve` (which starts the real container/serve) and the real boto3 client.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from sklearn_mme.container import examples
from sklearn_mme.handler.service import ModelService
from sklearn_mme.handler.sizing import measure_bytes
from sklearn_mme.harness.packaging import package
from sklearn_mme.harness.registry import opaque_name
from tests.harness.conftest import (
    RunningHarness,
    expected,
    metric,
    predictions,
    runtime_client,
    start_harness,
    stop_harness,
)

pytestmark = pytest.mark.mms

N_MODELS = 4
FITS = 2
INVOKES = 30


def _measured_budget(model_dirs: list[Path]) -> int:
    """A container budget that holds any FITS of the models and never FITS + 1, from the sizes the
    container itself measures (measure_bytes of the loaded model)."""
    sizes = sorted(measure_bytes(ModelService.load(d).model) for d in model_dirs)
    most_for_fits = sum(sizes[-FITS:])
    least_for_more = sum(sizes[: FITS + 1])
    assert most_for_fits < least_for_more, sizes
    return (most_for_fits + least_for_more) // 2


def _invoke(client, key: str, ex: examples.Example) -> np.ndarray:
    resp = client.invoke_endpoint(
        EndpointName="local",
        TargetModel=key,
        Body=json.dumps(ex.X.tolist()).encode(),
        ContentType="application/json",
        Accept="application/json",
    )
    return predictions(resp["Body"].read())


def _harness_loaded(h: RunningHarness) -> set[str]:
    return {m["name"] for m in h.info()["loaded"] if m["state"] == "loaded"}


def test_507_unloads_lru_and_retries_with_counts_matching_the_container(tmp_path: Path) -> None:
    models = [examples.small_model(seed) for seed in range(N_MODELS)]
    dirs = [examples.write_model_dir(ex, tmp_path / "src") for ex in models]
    budget = _measured_budget(dirs)
    store = tmp_path / "store"
    keys = [package(d, store / f"{ex.name}.tar.gz").name for d, ex in zip(dirs, models, strict=True)]

    # One model per process: there the budget answers 507 at load. Hosts evict their own LRU models instead
    # and keep them registered (tests/integration/test_hosts.py).
    h = start_harness(tmp_path, store, env={"MME_MEMORY_BUDGET": str(budget), "MME_BACKEND": "zygote"})
    try:
        client = runtime_client(h.url)
        for i in range(INVOKES):
            m = i % N_MODELS
            np.testing.assert_allclose(_invoke(client, keys[m], models[m]), expected(models[m]))
            held = {entry["modelName"] for entry in h.container_models()}
            # FITS exactly once full: a retry after one unload must find the room that unload made (the
            # DELETE answers once the ledger no longer counts the model), or the harness unloads another.
            assert len(held) == min(i + 1, FITS), (i, held)
            assert metric(h.url, "mme_loaded_model_count") == len(held), (i, held)
            assert _harness_loaded(h) == held, i
        refusals = metric(h.url, "mme_model_unload_total", reason="507")
        failures = metric(h.url, "mme_model_load_failure_total")
    finally:
        assert stop_harness(h) == 0, h.log()
    # The container's budget, not a harness limit, made the room: every load past the first two met one 507.
    assert refusals == INVOKES - FITS, h.log()[-3000:]
    assert failures == 0


def test_a_replaced_broken_artifact_loads_at_once(tmp_path: Path) -> None:
    """A broken artifact fails its load; replaced in the store, the very next request loads the new one,
    even while the container may still be letting go of the failed load's registration (answered 409)."""
    store = tmp_path / "store"
    broken = tmp_path / "src" / "broken"
    broken.mkdir(parents=True)
    (broken / "model.joblib").write_bytes(b"this is not a joblib file")
    h = start_harness(tmp_path, store, "--max-models", "4")
    try:
        client = runtime_client(h.url)
        for seed in range(5):
            ex = examples.small_model(seed)
            key = f"replaced-{seed}.tar.gz"
            package(broken, store / key)
            with pytest.raises(client.exceptions.ModelError):
                _invoke(client, key, ex)
            good = package(examples.write_model_dir(ex, tmp_path / "src"), tmp_path / "good.tar.gz")
            shutil.copyfile(good, store / key)
            np.testing.assert_allclose(_invoke(client, key, ex), expected(ex))
    finally:
        assert stop_harness(h) == 0, h.log()


def test_a_409_is_never_taken_as_loaded(tmp_path: Path) -> None:
    """The container already holds the harness's name for a key, loaded from other files (a load the harness
    lost track of): the harness's load meets 409 and must serve the key's own model, not what is there."""
    right, wrong = examples.small_model(1), examples.small_model(2)
    assert not np.allclose(right.model.predict_proba(right.X), wrong.model.predict_proba(right.X))
    store = tmp_path / "store"
    key = "model.tar.gz"
    package(examples.write_model_dir(right, tmp_path / "src"), store / key)
    stale = examples.write_model_dir(wrong, tmp_path / "stale")
    h = start_harness(tmp_path, store, "--max-models", "4")
    try:
        container = h.info()["container"]
        name = opaque_name(key)
        resp = requests.post(f"{container}/models", json={"model_name": name, "url": str(stale)}, timeout=60)
        assert resp.status_code == 200, resp.text
        t0 = time.monotonic()
        resp = runtime_client(h.url).invoke_endpoint(
            EndpointName="local",
            TargetModel=key,
            Body=json.dumps({"instances": right.X.tolist()}).encode(),
            ContentType="application/json",
            Accept="application/json",
        )
        got = json.loads(resp["Body"].read())["probabilities"]
        np.testing.assert_allclose(got, right.model.predict_proba(right.X), rtol=1e-9, atol=1e-12)
        assert {m["modelName"] for m in h.container_models()} == {name} == _harness_loaded(h)
        assert metric(h.url, "mme_loaded_model_count") == 1
        assert time.monotonic() - t0 < 30
    finally:
        assert stop_harness(h) == 0, h.log()
