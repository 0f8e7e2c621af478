"""The real `mme-local serve` console script in a subprocess, and the real boto3 client pointed at it:
shared by the harness tests and the reliability tests."""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import requests

from sklearn_mme.container import ports
from sklearn_mme.harness import scenario
from sklearn_mme.harness.metrics import parse_exposition, sample_sum

REPO = Path(__file__).resolve().parents[1]
MME_LOCAL = str(REPO / ".venv" / "bin" / "mme-local")


@dataclass
class RunningHarness:
    url: str
    proc: subprocess.Popen
    log_path: Path
    work_dir: Path
    store: str
    store_args: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def info(self) -> dict:
        return requests.get(self.url + "/mme-local/models", timeout=10).json()

    def container_models(self) -> list[dict]:
        """The container's own answer to GET /models (all pages)."""
        base = self.info()["container"]
        models, token = [], None
        while True:
            params = {"limit": 2, **({"next_page_token": token} if token else {})}
            data = requests.get(base + "/models", params=params, timeout=10).json()
            models.extend(data.get("models", []))
            token = data.get("nextPageToken")
            if not token:
                return models

    def container_log(self) -> str:
        logs = sorted(self.log_path.parent.glob("work-*/container/container.log"))
        return logs[-1].read_text(errors="replace") if logs else "(no container log)"

    def invoke(
        self,
        session: requests.Session,
        target: str,
        body: bytes,
        content_type: str = "text/csv",
        timeout: float = 120,
        **headers: str,
    ) -> requests.Response:
        h = {"Content-Type": content_type, "X-Amzn-SageMaker-Target-Model": target, **headers}
        return session.post(f"{self.url}/endpoints/local/invocations", data=body, headers=h, timeout=timeout)


def start_harness(
    tmp: Path,
    store: str | Path,
    *extra: str,
    store_args: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> RunningHarness:
    """`mme-local -v serve` (it starts container/serve itself, with this environment), waited for on /ping."""
    port = ports.free_port()
    log_path = tmp / f"harness-{port}.log"
    work_dir = tmp / f"work-{port}"
    store_args = store_args or []
    argv = [
        MME_LOCAL,
        "-v",
        "serve",
        "--model-store",
        str(store),
        "--port",
        str(port),
        "--work-dir",
        str(work_dir),
        *store_args,
        *extra,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, **(env or {})})
    h = RunningHarness(f"http://127.0.0.1:{port}", proc, log_path, work_dir, str(store), store_args)
    try:
        ports.wait_for_ping(h.url, 120, lambda: proc.poll() is None)
    except ports.NotReady as exc:
        stop_harness(h)
        raise AssertionError(f"harness {exc} (exit status {proc.returncode}):\n{h.log()}") from None
    return h


def stop_harness(h: RunningHarness) -> int:
    if h.proc.poll() is None:
        h.proc.send_signal(signal.SIGTERM)
    try:
        return h.proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(h.proc.pid, signal.SIGKILL)
        h.proc.wait(10)
        return -9


def runtime_client(url: str, retries: int = 1, pool: int = 10):
    """The real boto3 sagemaker-runtime client pointed at a harness (no retries unless asked): the one
    `mme-local invoke` and `scenario` use."""
    return scenario.runtime_client(url, max_pool=pool, retries=retries)


def metrics(url: str) -> dict:
    return parse_exposition(requests.get(url + "/metrics", timeout=10).text)


def metric(url: str, name: str, **labels: str) -> float:
    return sample_sum(metrics(url), name, **labels)
