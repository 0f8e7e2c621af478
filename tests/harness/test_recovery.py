"""A container that dies is restarted by the harness; models load again on their next request."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from sklearn_mme.harness.app import Harness, HarnessConfig
from sklearn_mme.harness.container import free_port
from tests.harness.conftest import expected, metric, predictions, runtime_client

pytestmark = pytest.mark.mms


def test_container_crash_is_recovered(tmp_path: Path, trained: dict) -> None:
    from tests.harness.conftest import build_artifacts

    store = tmp_path / "store"
    for key, archive in build_artifacts(tmp_path, trained).items():
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, store / key)
    ex = trained["iris_logreg"]
    body = json.dumps(ex.X.tolist()).encode()
    with Harness(
        HarnessConfig(model_store=str(store), port=free_port(), work_dir=tmp_path / "work")
    ) as harness:
        client = runtime_client(harness.url)
        first = client.invoke_endpoint(
            EndpointName="e", TargetModel="iris_logreg.tar.gz", Body=body, ContentType="application/json"
        )
        np.testing.assert_allclose(predictions(first["Body"].read()), expected(ex))
        old_url = harness.client.base_url  # type: ignore[union-attr]
        os.killpg(harness.runtime.proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        deadline = time.monotonic() + 90
        while harness.restarts == 0 or not harness.client.ping():  # type: ignore[union-attr]
            assert time.monotonic() < deadline and not harness.failed.is_set()
            time.sleep(0.2)
        assert harness.client.base_url != old_url  # type: ignore[union-attr]
        assert metric(harness.url, "mme_loaded_model_count") == 0
        again = client.invoke_endpoint(
            EndpointName="e", TargetModel="iris_logreg.tar.gz", Body=body, ContentType="application/json"
        )
        assert again["ResponseMetadata"]["HTTPHeaders"]["x-mme-cache"] == "miss"
        np.testing.assert_allclose(predictions(again["Body"].read()), expected(ex))
        assert metric(harness.url, "mme_model_downloading_seconds_count", model="iris_logreg.tar.gz") == 1
        assert metric(harness.url, "mme_model_unload_total", model="iris_logreg.tar.gz", reason="lost") == 1
