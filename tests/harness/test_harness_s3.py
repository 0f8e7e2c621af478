"""The harness with an S3 store served by moto's server mode (a real S3 wire protocol on loopback).

The harness runs with a short --model-wait-timeout so a slow model load surfaces as ModelNotReadyException.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.config import Config

from sklearn_mme.container import examples
from sklearn_mme.harness.store import S3Store
from tests.harness.conftest import (
    RunningHarness,
    build_artifacts,
    cli,
    expected,
    metric,
    model_keys,
    predictions,
    runtime_client,
    start_harness,
    stop_harness,
)

pytestmark = pytest.mark.mms

BUCKET = "mme-models"
PREFIX = "endpoints/demo/"
WAIT_LIMIT = 2.0  # the slow model's model_fn sleeps 5 s


@pytest.fixture(scope="module")
def s3_store(moto_s3: str, tmp_path_factory: pytest.TempPathFactory, trained: dict) -> str:
    s3 = boto3.client(
        "s3", endpoint_url=moto_s3, region_name="us-east-1", config=Config(s3={"addressing_style": "path"})
    )
    s3.create_bucket(Bucket=BUCKET)
    store = S3Store(f"s3://{BUCKET}/{PREFIX}", endpoint_url=moto_s3)
    for key, archive in build_artifacts(tmp_path_factory.mktemp("s3src"), trained).items():
        store.upload(archive, key)
    # Something outside the prefix must stay invisible to the store.
    s3.put_object(Bucket=BUCKET, Key="other/iris_logreg.tar.gz", Body=b"x")
    return f"s3://{BUCKET}/{PREFIX}"


@pytest.fixture(scope="module")
def harness(
    tmp_path_factory: pytest.TempPathFactory, s3_store: str, moto_s3: str
) -> Iterator[RunningHarness]:
    h = start_harness(
        tmp_path_factory.mktemp("harness-s3"), s3_store, "--max-models", "3",
        "--model-wait-timeout", str(WAIT_LIMIT), store_args=["--s3-endpoint-url", moto_s3],
    )  # fmt: skip
    yield h
    assert stop_harness(h) == 0, h.log()


def _invoke(client, key: str, ex: examples.Example):
    return client.invoke_endpoint(
        EndpointName="s3-mme", TargetModel=key, Body=json.dumps(ex.X.tolist()).encode(),
        ContentType="application/json", Accept="application/json",
    )  # fmt: skip


def test_store_lists_only_its_prefix(s3_store: str, moto_s3: str) -> None:
    keys = [o.key for o in S3Store(s3_store, endpoint_url=moto_s3).list()]
    assert "iris_logreg.tar.gz" in keys and "region/eu/iris_kmeans.tar.gz" in keys
    assert not any(k.startswith("other/") for k in keys)


@pytest.mark.parametrize("name", ["iris_logreg", "diabetes_ridge", "wine_pipeline"])
def test_predictions_from_s3(harness: RunningHarness, trained: dict, name: str) -> None:
    client = runtime_client(harness.url)
    resp = _invoke(client, model_keys()[name], trained[name])
    np.testing.assert_allclose(predictions(resp["Body"].read()), expected(trained[name]), rtol=1e-6)
    assert metric(harness.url, "mme_model_downloading_seconds_count", model=model_keys()[name]) == 1


def test_unknown_model_in_s3_is_validation_error(harness: RunningHarness) -> None:
    client = runtime_client(harness.url)
    with pytest.raises(client.exceptions.ValidationError) as info:
        client.invoke_endpoint(EndpointName="e", TargetModel="other/iris_logreg.tar.gz", Body=b"1")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_cli_add_list_remove_on_s3(harness: RunningHarness, moto_s3: str, tmp_path: Path) -> None:
    env = {"AWS_ENDPOINT_URL_S3": moto_s3}  # the env form of --s3-endpoint-url
    ex = examples.small_model(21)
    key = "tenants/customer_0021.tar.gz"
    client = runtime_client(harness.url)
    cli(
        "add",
        str(examples.write_model_dir(ex, tmp_path)),
        "--model-store",
        harness.store,
        "--key",
        key,
        env=env,
    )
    listing = cli("list", "--model-store", harness.store, env=env).stdout
    line = next(line for line in listing.splitlines() if line.startswith(key))
    assert line.split()[-1] in ("B", "KiB")  # name and size
    np.testing.assert_allclose(predictions(_invoke(client, key, ex)["Body"].read()), expected(ex))
    cli("remove", "customers/customer_0002.tar.gz", "--model-store", harness.store, env=env)
    assert "customers/customer_0002.tar.gz" not in cli("list", "--model-store", harness.store, env=env).stdout
    with pytest.raises(client.exceptions.ValidationError):
        _invoke(client, "customers/customer_0002.tar.gz", examples.small_model(2))


def test_slow_load_is_model_not_ready_then_serves(harness: RunningHarness, trained: dict) -> None:
    client = runtime_client(harness.url)  # no retries: see the 429 itself
    ex = trained["iris_logreg"]
    started = time.monotonic()
    with pytest.raises(client.exceptions.ModelNotReadyException) as info:
        _invoke(client, "slow.tar.gz", ex)
    waited = time.monotonic() - started
    resp = info.value.response
    assert resp["ResponseMetadata"]["HTTPStatusCode"] == 429
    assert resp["Error"]["Code"] == "ModelNotReadyException"
    assert WAIT_LIMIT - 0.1 <= waited < WAIT_LIMIT + 2
    # Requests for loaded models are not held up by that load.
    t0 = time.monotonic()
    _invoke(client, "iris_logreg.tar.gz", ex)
    assert time.monotonic() - t0 < 1.0
    # The load carried on: boto3's default retries (429 is retried) get the answer.
    patient = runtime_client(harness.url, retries=8)
    deadline = time.monotonic() + 30
    while True:
        try:
            resp = _invoke(patient, "slow.tar.gz", ex)
            break
        except patient.exceptions.ModelNotReadyException:
            assert time.monotonic() < deadline
    np.testing.assert_allclose(predictions(resp["Body"].read()), expected(ex))
    assert metric(harness.url, "mme_model_loading_seconds_count", model="slow.tar.gz") == 1
