"""Fixtures for the harness tests: example models, stores, a moto S3 server, running harnesses, boto3 clients.

Starting MMS costs seconds, so running harnesses are module-scoped and shared by the tests of a module.
Everything listens on 127.0.0.1; boto3 gets fake credentials and an endpoint_url, never real AWS.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sklearn_mme.container import examples
from sklearn_mme.harness.packaging import package
from tests.harness_process import (  # noqa: F401 - re-exported for the harness tests
    MME_LOCAL,
    RunningHarness,
    metric,
    metrics,
    runtime_client,
    start_harness,
    stop_harness,
)
from tests.support import moto_server

# A slow model's code/inference.py: model_fn sleeps, so a load lasts long enough for a burst of requests to
# arrive during it, or outlasts the harness's wait limit.
SLOW_INFERENCE = """
import os
import time

import joblib


def model_fn(model_dir):
    time.sleep({seconds})
    return joblib.load(os.path.join(model_dir, "model.joblib"))
"""


def slow_model_dir(ex: examples.Example, root: Path, name: str, seconds: float) -> Path:
    model_dir = examples.write_model_dir(ex, root, name)
    (model_dir / "code").mkdir(exist_ok=True)
    (model_dir / "code" / "inference.py").write_text(SLOW_INFERENCE.format(seconds=seconds))
    return model_dir


def model_keys() -> dict[str, str]:
    return {
        "iris_logreg": "iris_logreg.tar.gz",
        "diabetes_ridge": "diabetes_ridge.tar.gz",
        "wine_pipeline": "segments/wine_pipeline.tar.gz",
        "cancer_pipeline": "segments/cancer_pipeline.tar.gz",
        "iris_kmeans": "region/eu/iris_kmeans.tar.gz",
    }


def build_artifacts(root: Path, trained: dict[str, examples.Example]) -> dict[str, Path]:
    """Package the example models plus a few special ones under `root`; {key: archive}."""
    out: dict[str, Path] = {}
    src = root / "src"
    for name, key in model_keys().items():
        out[key] = package(examples.write_model_dir(trained[name], src), root / "artifacts" / key)
    for seed in range(3):
        ex = examples.small_model(seed)
        out[f"customers/{ex.name}.tar.gz"] = package(
            examples.write_model_dir(ex, src), root / "artifacts" / f"customers/{ex.name}.tar.gz"
        )
    broken = src / "broken"
    broken.mkdir(parents=True)
    (broken / "model.joblib").write_bytes(b"this is not a joblib file")
    out["broken.tar.gz"] = package(broken, root / "artifacts" / "broken.tar.gz")
    slow = slow_model_dir(trained["iris_logreg"], src, "slow", 5)
    out["slow.tar.gz"] = package(slow, root / "artifacts" / "slow.tar.gz")
    return out


def predictions(body: bytes) -> np.ndarray:
    data = json.loads(body)
    if isinstance(data, dict):
        data = data["predictions"]
    return np.asarray(data, dtype=float).reshape(-1)


def expected(ex: examples.Example) -> np.ndarray:
    return np.asarray(ex.model.predict(ex.X), dtype=float).reshape(-1)


def cli(*args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run the real console script."""
    done = subprocess.run(
        [MME_LOCAL, *args], capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )
    if check and done.returncode != 0:
        raise AssertionError(f"mme-local {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3 server in a subprocess on a free loopback port; yields its endpoint URL."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url:
        yield url
