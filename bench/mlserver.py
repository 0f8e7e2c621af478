"""MLServer (Seldon) as a peer: its own virtualenv, its model repository, its V2 protocol.

MLServer's dependencies clash with ours, so it runs from a virtualenv the bench creates once under
~/.cache/sklearn-mme and reuses; the pins come from pyproject.toml's `bench-mlserver` extra (never
installed into our .venv) plus our own scikit-learn, so the models we pickled load the same there.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from bench.client import JSON, Protocol, Request
from bench.models import BenchModel
from bench.servers import REPO, Server
from sklearn_mme.container import ports

EXTRA = "bench-mlserver"
# Our own pins that MLServer's venv must share: the library that pickled the models reads them back.
SHARED_PINS = ("scikit-learn",)
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sklearn-mme"
KINDS = ("mlserver", "mlserver-inproc")
READY_MARK = ".bench-ready"  # written last, with the pins: a half-made venv is never taken as ready


def pins(pyproject: Path = REPO / "pyproject.toml") -> list[str]:
    """MLServer's pins (the extra) plus our scikit-learn pin, read from pyproject.toml."""
    project = tomllib.loads(pyproject.read_text())["project"]
    extra = list(project["optional-dependencies"][EXTRA])
    ours = [d for d in project["dependencies"] if d.split("==")[0] in SHARED_PINS]
    return extra + ours


def mlserver_version(requirements: Sequence[str]) -> str:
    return next(r.split("==")[1] for r in requirements if r.startswith("mlserver=="))


def venv_dir(requirements: Sequence[str]) -> Path:
    return CACHE / f"bench-mlserver-{mlserver_version(requirements)}"


def ensure_venv(timeout_s: float = 900.0) -> Path:
    """MLServer's virtualenv with the pinned packages, created on first use; returns its bin dir.

    Raises RuntimeError (with pip's last lines) when it cannot be made, e.g. without network.
    """
    requirements = pins()
    venv = venv_dir(requirements)
    want = "\n".join(requirements) + "\n"
    CACHE.mkdir(parents=True, exist_ok=True)
    # One creator at a time (a test and a bench run may start together); the others wait and reuse.
    with open(CACHE / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        mark = venv / READY_MARK
        if mark.exists() and mark.read_text() == want:
            return venv / "bin"
        shutil.rmtree(venv, ignore_errors=True)
        log = CACHE / f"{venv.name}.log"
        with open(log, "w") as out:
            steps = [[sys.executable, "-m", "venv", str(venv)],
                     [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check",
                      *requirements]]
            for cmd in steps:
                try:
                    rc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout_s,
                                        check=False).returncode
                except subprocess.TimeoutExpired:
                    rc = "timeout"
                if rc != 0:
                    shutil.rmtree(venv, ignore_errors=True)
                    tail = "\n".join(log.read_text(errors="replace").splitlines()[-8:])
                    raise RuntimeError(f"could not create MLServer's venv ({cmd[2]} -> {rc}); "
                                       f"log {log}:\n{tail}")
        mark.write_text(want)
    return venv / "bin"


def model_settings(m: BenchModel) -> dict:
    """What MLServer's repository reads for one model: its sklearn runtime and the joblib file."""
    return {"name": m.name, "implementation": "mlserver_sklearn.SKLearnModel",
            "parameters": {"uri": str(m.ours_dir / "model.joblib")}}


def v2_request(csv: bytes) -> bytes:
    """The CSV rows as one FP64 tensor of the V2 inference protocol (repr-exact floats both ways)."""
    rows = [[float(v) for v in line.split(",")] for line in csv.decode().splitlines()]
    flat = [v for row in rows for v in row]
    return json.dumps({"inputs": [{"name": "input-0", "shape": [len(rows), len(rows[0])],
                                   "datatype": "FP64", "data": flat}]}).encode()


class V2Protocol(Protocol):
    """MLServer's repository API to load and unload, the V2 inference protocol (JSON) to invoke."""

    def __init__(self, repository: Path) -> None:
        super().__init__("ours")
        self.repository = repository
        self.bodies: dict[str, bytes] = {}

    def prepare(self, models: Sequence[BenchModel]) -> None:
        # Every model's directory is in the repository before the first load, as in real use
        # (MLServer finds a model by scanning the repository for model-settings.json files).
        for m in models:
            d = self.repository / m.name
            if not (d / "model-settings.json").exists():
                d.mkdir(parents=True, exist_ok=True)
                (d / "model-settings.json").write_text(json.dumps(model_settings(m)))
            self.bodies.setdefault(m.name, v2_request(m.body))

    def load(self, m: BenchModel) -> Request:
        return "POST", f"/v2/repository/models/{m.name}/load", b"", JSON

    def invoke(self, m: BenchModel) -> Request:
        body = self.bodies.get(m.name) or self.bodies.setdefault(m.name, v2_request(m.body))
        return "POST", f"/v2/models/{m.name}/infer", body, JSON

    def unload(self, m: BenchModel) -> Request:
        return "POST", f"/v2/repository/models/{m.name}/unload", b"", JSON

    def predictions(self, body: bytes) -> tuple[int, ...]:
        return tuple(int(p) for p in json.loads(body)["outputs"][0]["data"])


class MLServer(Server):
    """`mlserver start` on loopback, models loaded on demand through its repository API.

    `parallel_workers=None` keeps MLServer's default (a pool of inference worker processes, each
    holding every model); 0 serves in-process.
    """

    startup_timeout_s = 180.0

    def __init__(self, workdir: Path, parallel_workers: int | None = None) -> None:
        super().__init__(workdir)
        self.bin = ensure_venv()
        self.parallel_workers = parallel_workers
        self.label = "mlserver-inproc" if parallel_workers == 0 else "mlserver"
        self.repository = workdir / "repository"
        self.repository.mkdir(exist_ok=True)
        self.protocol = V2Protocol(self.repository)
        settings = {
            "host": "127.0.0.1", "http_port": self.port,
            # It also opens gRPC and Prometheus ports: free loopback ports, never its fixed defaults.
            "grpc_port": ports.free_port(), "metrics_port": ports.free_port(),
            "model_repository_root": str(self.repository), "load_models_at_startup": False,
            "metrics_dir": str(workdir / "metrics"),
        }
        if parallel_workers is not None:
            settings["parallel_workers"] = parallel_workers
        (self.repository / "settings.json").write_text(json.dumps(settings, indent=1))

    def command(self) -> list[str]:
        return [str(self.bin / "mlserver"), "start", str(self.repository)]

    def environment(self) -> dict[str, str]:
        drop = ("MME_", "SAGEMAKER_", "MLSERVER_", "VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env["PATH"] = os.pathsep.join([str(self.bin), env.get("PATH", "")])
        return env

    def _wait_ping(self) -> None:
        proc = self.proc
        assert proc is not None
        url = f"http://127.0.0.1:{self.port}/v2/health/ready"
        deadline = time.monotonic() + self.startup_timeout_s
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.label} not ready (exit status {proc.poll()}):\n{self.log_tail()}")

    def _request_stop(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # MLServer stops its workers on SIGTERM
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(f"[bench] {self.label}: did not stop within 30 s", file=sys.stderr)
        self.wait_gone(10)


def make(kind: str, workdir: Path) -> MLServer:
    return MLServer(workdir, parallel_workers=0 if kind == "mlserver-inproc" else None)
