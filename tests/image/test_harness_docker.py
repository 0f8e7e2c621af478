"""The harness's docker runtime against the built image: `mme-local serve --runtime docker --image IMAGE`
with podman as the container CLI, invoked through boto3's sagemaker-runtime client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import numpy as np
import pytest

from sklearn_mme.container.ports import NotReady, free_port, wait_for_ping

from .conftest import REPO, podman

pytestmark = pytest.mark.image


def _docker_runtime_missing() -> str:
    try:
        from sklearn_mme.harness import container as runtimes
    except ImportError as exc:
        return f"container/harness has no container runtimes yet ({exc})"
    if not hasattr(runtimes, "DockerRuntime"):
        return (
            "container/harness has no docker runtime yet (no DockerRuntime in container/harness/container.py)"
        )
    return ""


def _mme_local() -> list[str]:
    exe = REPO / ".venv" / "bin" / "mme-local"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "sklearn_mme.harness.cli"]


def _start_harness(tmp_path: Path, store: Path, image: str) -> tuple[subprocess.Popen, IO[str], str]:
    """`mme-local serve --runtime docker` with podman and --max-models 2; the process, its log, its URL."""
    port = free_port()
    log = (tmp_path / "harness.log").open("w+")
    env = {
        **os.environ,
        "CONTAINER_CLI": "podman",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    argv = [
        *_mme_local(),
        "serve",
        "--model-store",
        str(store),
        "--port",
        str(port),
        "--runtime",
        "docker",
        "--image",
        image,
        "--container-cli",
        "podman",
        "--max-models",
        "2",
    ]
    proc = subprocess.Popen(
        argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
    )
    return proc, log, f"http://127.0.0.1:{port}"


def _wait_ready(proc: subprocess.Popen, log: IO[str], url: str) -> str | None:
    """Wait for the harness's /ping; the name of the container it started, from its start-up line."""
    try:
        wait_for_ping(url, 240, alive=lambda: proc.poll() is None, interval=0.5)
    except NotReady as exc:
        pytest.fail(f"mme-local {exc} (exit status {proc.poll()}):\n{_read(log)[-4000:]}")
    # The harness may answer /ping a moment before its start-up line reaches the log.
    for _ in range(100):
        match = re.search(r"--name (\S+)", _read(log))
        if match:
            return match.group(1)
        time.sleep(0.1)
    return None


def _round_robin(url: str, chosen: list[str], examples) -> None:
    """Two rounds over 3 models with --max-models 2 (loads, evictions, reloads), answers checked."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        config=Config(retries={"max_attempts": 1}, read_timeout=120),
    )
    for _ in range(2):
        for model in chosen:
            ex = examples[model]
            body = "\n".join(",".join(repr(float(v)) for v in row) for row in ex.X)
            resp = client.invoke_endpoint(
                EndpointName="local",
                TargetModel=f"{model}.tar.gz",
                ContentType="text/csv",
                Accept="application/json",
                Body=body,
            )
            got = _predictions(resp["Body"].read())
            expected = ex.model.predict(ex.X)
            if model == "diabetes_ridge":
                np.testing.assert_allclose(got.astype(float), expected, rtol=1e-9, atol=1e-9)
            else:
                assert got.tolist() == expected.tolist(), model


def _stop(proc: subprocess.Popen, log: IO[str], name: str | None) -> None:
    """SIGTERM the harness; it must stop within 40 s and take its container with it."""
    try:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"mme-local did not stop within 40 s of SIGTERM:\n{_read(log)[-3000:]}")
    finally:
        if name:
            leftover = podman(
                "ps", "-a", "--filter", f"name=^{name}$", "--format", "{{.Names}}", check=False
            ).stdout.strip()
            podman("rm", "-f", name, check=False)
            assert leftover == "", f"the harness left its container {name} behind"


def test_harness_docker_runtime_serves_the_image(tmp_path: Path, image: str, examples) -> None:
    missing = _docker_runtime_missing()
    if missing:
        pytest.skip(missing)
    from sklearn_mme.container.examples import package_dir, write_model_dir

    store = tmp_path / "store"
    chosen = ["iris_logreg", "diabetes_ridge", "wine_pipeline"]
    for name in chosen:
        package_dir(write_model_dir(examples[name], tmp_path / "src"), store / f"{name}.tar.gz")

    proc, log, url = _start_harness(tmp_path, store, image)
    name = None
    try:
        name = _wait_ready(proc, log, url)
        _round_robin(url, chosen, examples)
        if name:
            running = podman(
                "inspect", "--format", "{{.State.Running}} {{.Config.User}}", name
            ).stdout.split()
            assert running == ["true", "model-server"]
    finally:
        _stop(proc, log, name)
    assert name, f"could not find the container name in the harness output:\n{_read(log)[-2000:]}"


def _read(log) -> str:
    log.flush()
    log.seek(0)
    return log.read()


def _predictions(raw: bytes) -> np.ndarray:
    import json

    body = json.loads(raw)
    return np.asarray(body["predictions"] if isinstance(body, dict) else body)
