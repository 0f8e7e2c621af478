"""Fixtures for the image tests (marker `image`): a running container of the built image, with example models.

The `image` tests build on `bash tests/image/run_image_tests.sh`, which builds the image and sets
MME_IMAGE_TESTS=1. In the default `pytest tests` run they are skipped, so the suite needs no podman;
the rest of tests/image (build_and_push.sh with fake tools) runs everywhere.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sklearn_mme.container import ports

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("MME_IMAGE", "localhost/sklearn-mme:test")
MODELS_MOUNT = "/opt/ml/models"
START_TIMEOUT_S = float(os.environ.get("MME_IMAGE_START_TIMEOUT", "180"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    enabled = os.environ.get("MME_IMAGE_TESTS") == "1"
    podman_problem = os.environ.get("MME_IMAGE_SKIP_REASON", "")
    for item in items:
        if item.get_closest_marker("image") is None:
            continue
        if not enabled:
            item.add_marker(
                pytest.mark.skip(
                    reason="image test: runs with MME_IMAGE_TESTS=1 (bash tests/image/run_image_tests.sh)"
                )
            )
        elif podman_problem:
            item.add_marker(pytest.mark.skip(reason=f"podman unavailable: {podman_problem}"))


def podman(*args: str, check: bool = True, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["podman", *args], check=check, timeout=timeout, capture_output=True, text=True, **kw
    )


@pytest.fixture(scope="session")
def image() -> str:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: run bash tests/image/run_image_tests.sh")
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"image {IMAGE} not built: run bash tests/image/run_image_tests.sh")
    return IMAGE


@pytest.fixture(scope="session")
def examples():
    from sklearn_mme.container.examples import train_all

    return train_all()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, examples) -> Path:
    """Example model directories, readable by the container's non-root user (pytest's tmp dirs are 0700)."""
    from sklearn_mme.container.examples import write_model_dir

    root = tmp_path_factory.mktemp("opt-ml-models")
    for ex in examples.values():
        write_model_dir(ex, root)
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return root


@dataclass
class Container:
    name: str
    url: str

    def logs(self) -> str:
        out = podman("logs", self.name, check=False)
        return out.stdout + out.stderr

    def state(self) -> dict:
        out = podman("inspect", "--format", "{{json .State}}", self.name, check=False)
        return json.loads(out.stdout) if out.returncode == 0 else {}


def start_container(
    image: str, model_root: Path, *extra: str, init: bool = True, container_port: int = 8080
) -> Container:
    """`podman run [--init] -d -p 127.0.0.1:PORT:CPORT -v MODELS:/opt/ml/models:ro IMAGE serve`, then /ping.

    Without --init the image's tini is PID 1, as under SageMaker's `docker run IMAGE serve`."""
    name = f"mme-test-{uuid.uuid4().hex[:10]}"
    port = ports.free_port()
    podman(
        "run",
        *(["--init"] if init else []),
        "-d",
        "--name",
        name,
        "-p",
        f"127.0.0.1:{port}:{container_port}",
        "-v",
        f"{model_root}:{MODELS_MOUNT}:ro",
        *extra,
        image,
        "serve",
    )
    c = Container(name, f"http://127.0.0.1:{port}")
    try:
        ports.wait_for_ping(c.url, START_TIMEOUT_S, lambda: bool(c.state().get("Running", False)), 0.5)
    except ports.NotReady as exc:
        logs = c.logs()
        podman("rm", "-f", name, check=False)
        pytest.fail(f"container {exc}; logs:\n{logs[-4000:]}")
    return c


@pytest.fixture(scope="session")
def container(image: str, model_root: Path) -> Iterator[Container]:
    c = start_container(image, model_root)
    try:
        yield c
    finally:
        podman("rm", "-f", "-t", "2", c.name, check=False)


@pytest.fixture(params=[True, False], ids=["podman-init", "tini-pid1"])
def fresh_container(request: pytest.FixtureRequest, image: str, model_root: Path) -> Iterator[Container]:
    c = start_container(image, model_root, init=request.param)
    try:
        yield c
    finally:
        podman("rm", "-f", "-t", "2", c.name, check=False)
