"""The harness with a directory store, driven through the real boto3 sagemaker-runtime client.

One `mme-local serve --max-models 2` (console script, subprocess) in front of the real `container/serve`,
shared by the module.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
from botocore.exceptions import ClientError

from sklearn_mme.container import examples
from sklearn_mme.harness.packaging import package
from tests.harness.conftest import (
    RunningHarness,
    build_artifacts,
    cli,
    expected,
    metric,
    model_keys,
    predictions,
    runtime_client,
    slow_model_dir,
    start_harness,
    stop_harness,
)

pytestmark = pytest.mark.mms

MAX_MODELS = 2


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory, trained: dict) -> Path:
    root = tmp_path_factory.mktemp("dirstore")
    store = root / "store"
    for key, archive in build_artifacts(root, trained).items():
        if key != "slow.tar.gz":
            (store / key).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(archive, store / key)
    evil = store / "evil.tar.gz"
    import io
    import tarfile

    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../../outside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"bad"))
    return store


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, store_dir: Path) -> Iterator[RunningHarness]:
    h = start_harness(tmp_path_factory.mktemp("harness"), str(store_dir), "--max-models", str(MAX_MODELS))
    yield h
    status = stop_harness(h)
    assert status == 0, h.log()


@pytest.fixture(scope="module")
def client(harness: RunningHarness):
    return runtime_client(harness.url, pool=60)


def _invoke(client, key: str, ex: examples.Example, content_type: str = "application/json") -> dict:
    if content_type == "text/csv":
        body = "\n".join(",".join(repr(float(v)) for v in row) for row in ex.X).encode()
    else:
        body = json.dumps(ex.X.tolist()).encode()
    return client.invoke_endpoint(
        EndpointName="local-mme",
        TargetModel=key,
        Body=body,
        ContentType=content_type,
        Accept="application/json",
    )


@pytest.mark.parametrize("name", list(model_keys()))
@pytest.mark.parametrize("content_type", ["application/json", "text/csv"])
def test_predictions_match_in_process(client, trained: dict, name: str, content_type: str) -> None:
    ex = trained[name]
    resp = _invoke(client, model_keys()[name], ex, content_type)
    body = resp["Body"].read()
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert resp["ContentType"].startswith("application/json")
    assert resp["InvokedProductionVariant"] == "AllTraffic"
    np.testing.assert_allclose(predictions(body), expected(ex), rtol=1e-6)


def test_hit_and_miss_headers(client, trained: dict) -> None:
    ex = trained["iris_logreg"]
    key = "customers/customer_0002.tar.gz"
    first = _invoke(client, key, examples.small_model(2))
    second = _invoke(client, key, examples.small_model(2))
    h1, h2 = first["ResponseMetadata"]["HTTPHeaders"], second["ResponseMetadata"]["HTTPHeaders"]
    assert (h1["x-mme-cache"], h2["x-mme-cache"]) == ("miss", "hit")
    assert float(h1["x-mme-load-wait-ms"]) > 0 and float(h2["x-mme-load-wait-ms"]) == 0
    np.testing.assert_allclose(predictions(second["Body"].read()), expected(examples.small_model(2)))
    assert ex is not None


def test_unknown_target_model_is_validation_error(client) -> None:
    with pytest.raises(client.exceptions.ValidationError) as info:
        client.invoke_endpoint(EndpointName="e", TargetModel="nope.tar.gz", Body=b"1", ContentType="text/csv")
    err = info.value.response
    assert err["Error"]["Code"] == "ValidationError"
    assert err["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert "nope.tar.gz" in err["Error"]["Message"]


@pytest.mark.parametrize("key", ["../etc/passwd", "/abs.tar.gz", "a//b.tar.gz"])
def test_bad_target_model_key_is_validation_error(client, key: str) -> None:
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(EndpointName="e", TargetModel=key, Body=b"1", ContentType="text/csv")
    assert info.value.response["Error"]["Code"] == "ValidationError"


def test_container_error_is_model_error(client) -> None:
    with pytest.raises(client.exceptions.ModelError) as info:
        client.invoke_endpoint(
            EndpointName="e", TargetModel="iris_logreg.tar.gz", Body=b"not,numbers\n", ContentType="text/csv"
        )
    resp = info.value.response
    assert resp["Error"]["Code"] == "ModelError"
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 424
    assert resp["OriginalStatusCode"] == 400
    assert "not numeric" in resp["OriginalMessage"]
    assert resp["LogStreamArn"].startswith("arn:aws:logs:")
    assert "Received client error (400)" in resp["Error"]["Message"]


def test_model_that_fails_to_load_is_model_error(client, harness: RunningHarness) -> None:
    with pytest.raises(client.exceptions.ModelError) as info:
        client.invoke_endpoint(
            EndpointName="e", TargetModel="broken.tar.gz", Body=b"1,2", ContentType="text/csv"
        )
    resp = info.value.response
    assert resp["OriginalStatusCode"] >= 400
    assert "Failed to load model broken.tar.gz" in resp["Error"]["Message"]
    assert "could not load model.joblib" in resp["Error"]["Message"]  # the reason, from the container's body
    assert "broken.tar.gz" not in {m["model"] for m in harness.info()["loaded"]}


def test_unsafe_archive_is_rejected(client, store_dir: Path) -> None:
    with pytest.raises(client.exceptions.ValidationError) as info:
        client.invoke_endpoint(EndpointName="e", TargetModel="evil.tar.gz", Body=b"1", ContentType="text/csv")
    assert "leaving the archive root" in info.value.response["Error"]["Message"]
    assert not (store_dir.parent / "outside.txt").exists()


def test_payload_over_6mb_is_413(client, trained: dict) -> None:
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(
            EndpointName="e",
            TargetModel="iris_logreg.tar.gz",
            Body=b"1" * (6 * 1024 * 1024 + 1),
            ContentType="text/csv",
        )
    resp = info.value.response
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 413
    assert resp["Error"]["Code"] == "413"  # SageMaker's bare 413: botocore falls back to the status code
    assert "6291456" in resp["Error"]["Message"]
    # Exactly 6 MiB is allowed (the model then complains about the content, not the size).
    with pytest.raises(client.exceptions.ModelError):
        client.invoke_endpoint(
            EndpointName="e",
            TargetModel="iris_logreg.tar.gz",
            Body=b"1" * (6 * 1024 * 1024),
            ContentType="text/csv",
        )
    resp = _invoke(client, "iris_logreg.tar.gz", trained["iris_logreg"])  # the connection pool still works
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 200


def test_missing_target_model_header(harness: RunningHarness) -> None:
    resp = requests.post(
        harness.url + "/endpoints/e/invocations", data=b"1", headers={"Content-Type": "text/csv"}
    )
    assert resp.status_code == 400
    assert resp.headers["x-amzn-ErrorType"].startswith("ValidationError:")
    assert "TargetModel" in resp.json()["message"]
    resp = requests.get(harness.url + "/nope")
    assert resp.status_code == 404 and "message" in resp.json()


def test_add_list_remove_reflected_at_once(client, harness: RunningHarness, tmp_path: Path) -> None:
    ex = examples.small_model(42)
    src = examples.write_model_dir(ex, tmp_path)
    key = "added/customer_0042.tar.gz"
    with pytest.raises(client.exceptions.ValidationError):
        _invoke(client, key, ex)
    cli("add", str(src), "--model-store", harness.store, "--key", key)
    listed = cli("list", "--model-store", harness.store).stdout
    assert key in listed
    np.testing.assert_allclose(predictions(_invoke(client, key, ex)["Body"].read()), expected(ex))
    # Remove a model that is not loaded: it is gone from the list and from the endpoint at once.
    victim = "customers/customer_0001.tar.gz"
    assert victim not in {m["model"] for m in harness.info()["loaded"]}
    cli("remove", victim, "--model-store", harness.store)
    assert victim not in cli("list", "--model-store", harness.store).stdout
    with pytest.raises(client.exceptions.ValidationError):
        _invoke(client, victim, examples.small_model(1))


def test_round_robin_eviction_never_exceeds_max_models(
    client, harness: RunningHarness, trained: dict
) -> None:
    keys = model_keys()
    loads_before = metric(harness.url, "mme_model_loading_seconds_count")
    unloads_before = metric(harness.url, "mme_model_unload_total")
    unload_hist_before = metric(harness.url, "mme_model_unloading_seconds_count")
    loaded_before = metric(harness.url, "mme_loaded_model_count")
    seen: list[tuple[int, int]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append((len(harness.container_models()), int(metric(harness.url, "mme_loaded_model_count"))))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _round in range(4):
            for name, key in keys.items():
                resp = _invoke(client, key, trained[name])
                np.testing.assert_allclose(
                    predictions(resp["Body"].read()), expected(trained[name]), rtol=1e-6
                )
                assert len(harness.container_models()) <= MAX_MODELS
    finally:
        stop.set()
        watcher.join()
    assert seen and max(c for c, _ in seen) <= MAX_MODELS and max(g for _, g in seen) <= MAX_MODELS
    loads = metric(harness.url, "mme_model_loading_seconds_count") - loads_before
    unloads = metric(harness.url, "mme_model_unload_total") - unloads_before
    loaded_after = metric(harness.url, "mme_loaded_model_count")
    assert loads >= 4 * len(keys) - MAX_MODELS  # 5 models, room for 2: (almost) every request is a miss
    assert unloads == loads - (loaded_after - loaded_before)  # every load beyond the room evicted one
    assert metric(harness.url, "mme_model_unloading_seconds_count") - unload_hist_before == unloads
    assert loaded_after <= MAX_MODELS


def test_fifty_concurrent_cold_requests_one_download_one_load(harness: RunningHarness, trained: dict) -> None:
    # model_fn takes 2 s, so the whole burst arrives while the one load runs.
    ex = examples.small_model(7)
    key = "cold/customer_0007.tar.gz"
    src = slow_model_dir(ex, Path(harness.log_path).parent / "cold", "customer_0007", 2)
    cli("add", str(src), "--model-store", harness.store, "--key", key)
    body = json.dumps(ex.X.tolist()).encode()
    client = runtime_client(harness.url, pool=60)
    barrier = threading.Barrier(50)

    def one(target: str) -> tuple[bytes, str]:
        barrier.wait()
        resp = client.invoke_endpoint(
            EndpointName="e", TargetModel=target, Body=body, ContentType="application/json"
        )
        return resp["Body"].read(), resp["ResponseMetadata"]["HTTPHeaders"]["x-mme-cache"]

    with ThreadPoolExecutor(50) as pool:
        list(pool.map(one, ["customers/customer_0000.tar.gz"] * 50))  # open 50 pooled connections first
        results = list(pool.map(one, [key] * 50))
    for body_out, _cache in results:
        np.testing.assert_allclose(predictions(body_out), expected(ex))
    url = harness.url
    assert metric(url, "mme_model_downloading_seconds_count", model=key) == 1
    assert metric(url, "mme_model_loading_seconds_count", model=key) == 1
    misses = metric(url, "mme_model_cache_miss_total", model=key)
    assert misses == 50 - sum(c == "hit" for _, c in results)
    assert misses >= 45  # (nearly) the whole burst arrived during the load and shared it
    assert metric(url, "mme_model_loading_wait_seconds_count", model=key) == misses


def test_metrics_and_ping(harness: RunningHarness) -> None:
    assert requests.get(harness.url + "/ping").status_code == 200
    text = requests.get(harness.url + "/metrics").text
    for name in (
        "mme_loaded_model_count",
        "mme_model_cache_hit_total",
        "mme_model_cache_miss_total",
        "mme_model_loading_wait_seconds_bucket",
        "mme_model_downloading_seconds_count",
        "mme_model_loading_seconds_sum",
        "mme_model_unloading_seconds_count",
    ):
        assert name in text, name
    assert 'model="iris_logreg.tar.gz"' in text


def test_reuploaded_artifact_is_downloaded_again(harness: RunningHarness, tmp_path: Path, client) -> None:
    """The artifact disk cache checks the store's etag: a new version is fetched on the next load."""
    key = "versioned.tar.gz"
    v1, v2 = examples.small_model(11), examples.small_model(12)
    cli(
        "add",
        str(examples.write_model_dir(v1, tmp_path / "v1")),
        "--model-store",
        harness.store,
        "--key",
        key,
    )
    _invoke(client, key, v1)
    archive = package(examples.write_model_dir(v2, tmp_path / "v2"), tmp_path / "v2.tar.gz")
    time.sleep(0.01)
    cli("add", str(archive), "--model-store", harness.store, "--key", key)
    # Push it out with other models (max 2 loaded), then ask again: the new version is served.
    for name in ("iris_logreg", "diabetes_ridge"):
        _invoke(client, model_keys()[name], examples.train(name))
    resp = _invoke(client, key, v2)
    np.testing.assert_allclose(predictions(resp["Body"].read()), expected(v2))
    assert metric(harness.url, "mme_model_downloading_seconds_count", model=key) == 2
