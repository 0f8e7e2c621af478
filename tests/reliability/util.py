"""Helpers shared by the reliability tests: a running `mme-local serve`, boto3, metrics, a /ping watcher,
payloads whose unpickling would leave a marker file, and small statistics."""

from __future__ import annotations

import io
import os
import pickle
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from botocore.config import Config

from container.harness.container import free_port
from container.harness.metrics import parse_exposition, sample_sum

REPO = Path(__file__).resolve().parents[2]
MME_LOCAL = str(REPO / ".venv" / "bin" / "mme-local")


# ---- the harness (the real console script in a subprocess) ---------------------------------------------


@dataclass
class RunningHarness:
    url: str
    proc: subprocess.Popen
    log_path: Path
    work_dir: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

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
    tmp: Path, store: str | Path, *extra: str, env: dict[str, str] | None = None
) -> RunningHarness:
    """`mme-local -v serve` (it starts container/serve itself, with this environment), waited for on /ping."""
    port = free_port()
    log_path = tmp / f"harness-{port}.log"
    work_dir = tmp / f"work-{port}"
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
        *extra,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
    h = RunningHarness(f"http://127.0.0.1:{port}", proc, log_path, work_dir)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"harness exited {proc.returncode}:\n{h.log()}")
        try:
            if requests.get(h.url + "/ping", timeout=2).status_code == 200:
                return h
        except requests.RequestException:
            pass
        time.sleep(0.2)
    stop_harness(h)
    raise AssertionError(f"harness did not answer /ping:\n{h.log()}")


def stop_harness(h: RunningHarness) -> int:
    if h.proc.poll() is None:
        h.proc.send_signal(signal.SIGTERM)
    try:
        return h.proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(h.proc.pid, signal.SIGKILL)
        h.proc.wait(10)
        return -9


def runtime_client(url: str, pool: int = 10):  # noqa: ANN201 - boto3 client type
    """The real boto3 sagemaker-runtime client pointed at a harness, no retries."""
    import boto3

    return boto3.session.Session().client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(
            retries={"total_max_attempts": 1, "mode": "standard"},
            max_pool_connections=pool,
            read_timeout=70,
            connect_timeout=10,
        ),
    )


def metrics(url: str) -> dict:
    return parse_exposition(requests.get(url + "/metrics", timeout=10).text)


def metric_sum(families: dict, name: str, **labels: str) -> float:
    return sample_sum(families, name, **labels)


# ---- watching /ping while something else happens --------------------------------------------------------


@dataclass
class PingWatch:
    """Polls GET {url}/ping every `interval` s in a thread; records status codes (or exception names)."""

    url: str
    interval: float = 0.1
    timeout: float = 2.0
    results: Counter = field(default_factory=Counter)
    slowest: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> PingWatch:
        def run() -> None:
            session = requests.Session()
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    self.results[session.get(self.url + "/ping", timeout=self.timeout).status_code] += 1
                except requests.RequestException as exc:
                    self.results[type(exc).__name__] += 1
                self.slowest = max(self.slowest, time.monotonic() - t0)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=run, name="ping-watch", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    @property
    def healthy(self) -> bool:
        return set(self.results) == {200} and self.results[200] > 0


# ---- payloads whose unpickling would create a marker file -----------------------------------------------


class _Marker:
    """Unpickling this calls open(path, "w"): the file appears iff the pickle was ever loaded."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def marker_pickle(path: Path) -> bytes:
    return pickle.dumps(_Marker(path), protocol=2)


def marker_npy(path: Path) -> bytes:
    """A valid .npy file of dtype object whose element unpickles into open(path, 'w')."""
    arr = np.empty((1, 4), dtype=object)
    for j in range(4):
        arr[0, j] = _Marker(path)
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    return buf.getvalue()


def write_marker_joblib(path: Path, marker: Path) -> None:
    import joblib

    joblib.dump(_Marker(marker), path)


# ---- small statistics -------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else float("nan")


def fmt_counter(counter: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(counter.items(), key=lambda kv: str(kv[0])))
