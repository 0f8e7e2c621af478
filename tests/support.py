"""Helpers for tests that run real servers: free ports MMS accepts, a running `container/serve`."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import requests

from sklearn_mme.container import ports

REPO = Path(__file__).resolve().parent.parent
SERVE = REPO / "container" / "serve"


# No test may reach real AWS: fake credentials for every boto3 client, here or in subprocesses.
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Serve:
    """A `container/serve` process and its base URL."""

    def __init__(self, proc: subprocess.Popen, port: int, log_path: Path) -> None:
        self.proc, self.port, self.log_path = proc, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.http = requests.Session()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def load(self, name: str, path: str | os.PathLike, timeout: float = 120) -> requests.Response:
        body = {"model_name": name, "url": str(path)}
        return self.http.post(f"{self.url}/models", json=body, timeout=timeout)

    def invoke(self, name: str, body: bytes | str, content_type: str = "text/csv",
               accept: str | None = None, **headers: str) -> requests.Response:
        h = {"Content-Type": content_type, **headers}
        if accept is not None:
            h["Accept"] = accept
        return self.http.post(f"{self.url}/models/{name}/invoke", data=body, headers=h, timeout=60)

    def unload(self, name: str) -> requests.Response:
        return self.http.delete(f"{self.url}/models/{name}", timeout=60)

    def run_dir(self) -> Path:
        for line in self.log().splitlines():
            if line.startswith("[serve]") and "run dir " in line:
                return Path(line.rsplit("run dir ", 1)[1].strip())
        raise AssertionError("serve did not log its run dir")

    def ledger(self) -> list[tuple[int, int, str]]:
        """(pid, bytes, model name) per "BYTES NAME" line of the memory ledger's records of running processes
        (several in a shared host's record; not its `host` line, nor version skew lines)."""
        out = []
        for entry in (self.run_dir() / "ledger").iterdir():
            if entry.name.isdigit() and _running(int(entry.name)):
                for line in entry.read_text().splitlines():
                    parts = line.split(maxsplit=1)
                    if len(parts) == 2 and parts[0].isdigit():
                        out.append((int(entry.name), int(parts[0]), parts[1].strip()))
        return out

    def model_pids(self) -> dict[str, int]:
        """Model name -> pid of the process serving it (from the container's memory ledger)."""
        return {name: pid for pid, _, name in self.ledger()}

    def ledger_bytes(self, name: str) -> int:
        """The bytes the memory ledger records for model `name`."""
        for _, nbytes, held in self.ledger():
            if held == name:
                return nbytes
        raise AssertionError(f"no ledger line for {name}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


@contextmanager
def running_serve(tmp: Path, nofile: int | None = None, ready: bool = True, **env: str) -> Iterator[Serve]:
    """`container/serve` on a free port; `nofile`: under that descriptor limit (soft and hard, as prlimit);
    `ready`: yielded once /ping answers 200, else as soon as it is started."""
    port = ports.free_port()
    log_path = tmp / f"serve-{port}.log"
    full_env = {**os.environ, "SAGEMAKER_BIND_TO_PORT": str(port), "SAGEMAKER_MULTI_MODEL": "true", **env}
    command = [str(SERVE)] if nofile is None else ["prlimit", f"--nofile={nofile}:{nofile}", str(SERVE)]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    serve = Serve(proc, port, log_path)
    try:
        if ready:
            ports.wait_for_ping(serve.url, 90, lambda: proc.poll() is None)
        yield serve
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def model_with_code(model_dir: Path, code: str) -> Path:
    """Give a model directory a user script (`code/inference.py`, SAGEMAKER_PROGRAM's default)."""
    (model_dir / "code").mkdir(exist_ok=True)
    (model_dir / "code" / "inference.py").write_text(code)
    return model_dir


def running_pids(pids) -> list[int]:
    """Those of `pids` still running (a zombie has ended: only its exit status waits to be read)."""
    out = []
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.append(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def write_tar(
    path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], pax: dict | None = None
) -> Path:
    """A tar.gz of exactly these members (data None: no content, e.g. a link or a device)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz", format=tarfile.PAX_FORMAT, pax_headers=pax or {}) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return path


@contextmanager
def moto_server(log_path: Path) -> Iterator[str]:
    """moto's AWS server in a subprocess on a free loopback port (all the AWS tests reach); yields its URL."""
    url = f"http://127.0.0.1:{ports.free_port()}"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", url.rsplit(":", 1)[1]],
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **FAKE_AWS}, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:  # moto has no /ping; any answer from its own API means it is up
            if proc.poll() is not None:
                raise AssertionError(f"moto server exited:\n{log_path.read_text()}")
            try:
                requests.get(url + "/moto-api/", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline:
                    raise AssertionError(f"moto server did not start:\n{log_path.read_text()}") from None
                time.sleep(0.2)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

