"""The docker runtime for real: the image under docker or podman, behind the harness, driven by boto3.

Runs only where a container engine answers (`docker info` / `podman info`) and the image exists
(MME_TEST_IMAGE, default localhost/sklearn-mme:test, built by the image tests); else skipped, saying why.
The command line itself is unit tested in test_runtime_cmd.py everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sklearn_mme.harness.app import Harness, HarnessConfig
from sklearn_mme.harness.container import engine_works, free_port
from tests.harness.conftest import expected, metric, model_keys, predictions, runtime_client

pytestmark = pytest.mark.mms

IMAGE = os.environ.get("MME_TEST_IMAGE", "localhost/sklearn-mme:test")


def _engine() -> tuple[str | None, str]:
    """(CLI to use, reason when there is none)."""
    clis = [
        c
        for c in ([os.environ["CONTAINER_CLI"]] if os.environ.get("CONTAINER_CLI") else ["docker", "podman"])
        if shutil.which(c)
    ]
    if not clis:
        return None, "no docker or podman CLI on PATH"
    working = [c for c in clis if engine_works(c)]
    if not working:
        return None, f"no container engine answers ({' / '.join(c + ' info' for c in clis)} failed)"
    for cli in working:
        found = subprocess.run([cli, "image", "inspect", IMAGE], capture_output=True, timeout=60, check=False)
        if found.returncode == 0:
            return cli, ""
    return None, f"image {IMAGE} not found in {' / '.join(working)} (the image tests build it)"


@pytest.fixture(scope="module")
def docker_harness(tmp_path_factory: pytest.TempPathFactory, trained: dict) -> Iterator[Harness]:
    cli, reason = _engine()
    if cli is None:
        pytest.skip(f"docker runtime not exercised: {reason}")
    from tests.harness.conftest import build_artifacts

    root = tmp_path_factory.mktemp("docker")
    store = root / "store"
    for key, archive in build_artifacts(root, trained).items():
        (store / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(archive, store / key)
    config = HarnessConfig(
        model_store=str(store),
        port=free_port(),
        max_models=2,
        runtime="docker",
        image=IMAGE,
        container_cli=cli,
        work_dir=root / "work",
        container_start_timeout=240,
    )
    harness = Harness(config)
    harness.start()
    yield harness
    name = harness.runtime.name  # type: ignore[attr-defined]
    harness.stop()
    left = subprocess.run(
        [cli, "ps", "-a", "--filter", f"name={name}", "--format", "{{.Names}}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert name not in left.stdout  # --rm and stop: nothing left behind


def test_docker_runtime_serves_and_evicts(docker_harness: Harness, trained: dict) -> None:
    client = runtime_client(docker_harness.url)
    argv = docker_harness.runtime.argv()  # type: ignore[attr-defined]
    assert argv[1:3] == ["run", "--rm"] and argv[-2:] == [IMAGE, "serve"]
    for _round in range(2):
        for name, key in model_keys().items():
            ex = trained[name]
            resp = client.invoke_endpoint(
                EndpointName="docker",
                TargetModel=key,
                Body=json.dumps(ex.X.tolist()).encode(),
                ContentType="application/json",
            )
            np.testing.assert_allclose(predictions(resp["Body"].read()), expected(ex), rtol=1e-6)
    assert metric(docker_harness.url, "mme_loaded_model_count") <= 2
    assert metric(docker_harness.url, "mme_model_unload_total") >= 8
    # The container saw paths under its own mount, not the host's.
    loaded = docker_harness.client.list_models()  # type: ignore[union-attr]
    assert loaded and all(m["modelUrl"].startswith("/opt/ml/models/") for m in loaded)
    assert Path(docker_harness.models_dir).is_dir()
