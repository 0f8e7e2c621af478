"""Container runtimes: how the harness starts the serving container and names model directories for it.

`process` runs `container/serve` directly (no engine needed); `docker` runs the image with docker or podman,
the way SageMaker does (`docker run IMAGE serve`), with the harness's model directory mounted read-only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import IO, Protocol

from sklearn_mme.container import ports
from sklearn_mme.container.ports import free_port  # the one helper; the harness's modules import it from here

PORT_RANGE = ports.PORT_RANGE
CONTAINER_MODELS_DIR = "/opt/ml/models"
SERVE_CMD = [sys.executable, "-m", "sklearn_mme.container.server"]  # the same entry as container/serve


class RuntimeStartError(RuntimeError):
    """The container did not come up; the message includes the tail of its log."""


class ContainerRuntime(Protocol):
    base_url: str

    def start(self, timeout: float = 120.0) -> str: ...

    def stop(self, timeout: float = 20.0) -> None: ...

    def alive(self) -> bool: ...

    def model_url(self, local_dir: Path) -> str: ...

    def describe(self) -> str: ...


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def wait_for_ping(base_url: str, proc: subprocess.Popen | None, log_path: Path, timeout: float) -> None:
    """container.ports.wait_for_ping, failing early when the process exits, with the log's tail."""
    try:
        ports.wait_for_ping(base_url, timeout, None if proc is None else lambda: proc.poll() is None, 0.25)
    except ports.NotReady as exc:
        status = "" if proc is None or proc.returncode is None else f" (exit status {proc.returncode})"
        raise RuntimeStartError(f"container {exc}{status}; log tail:\n{_tail(log_path)}") from None


def session_pids(sid: int) -> list[int]:
    """The processes of session `sid` (Linux /proc; empty elsewhere): what a server started with
    start_new_session=True left running, whatever process group it is in."""
    pids = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return []
    for name in entries:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()  # after "pid (comm) ": state ppid pgrp session ...
        if len(fields) > 3 and int(fields[3]) == sid:
            pids.append(int(name))
    return pids


class _Subprocess:
    """Shared start/stop of a foreground server process in its own process group."""

    proc: subprocess.Popen | None = None
    log_path: Path
    _log: IO[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self._log = open(self.log_path, "ab")
        # A new session: stop() can sweep up whatever the server forked even if it leaves children behind.
        self.proc = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _terminate(self, timeout: float) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        # Anything still in the group (the process itself or orphans it left) is ours to end, and so is
        # anything else in its session: MMS's Java front runs its per-model launchers in a group of its own,
        # which outlive a server that was killed (a crash the watchdog then replaces).
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for pid in session_pids(proc.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        if self._log is not None:
            self._log.close()
            self._log = None


class ProcessRuntime(_Subprocess):
    """`container/serve` as a local process on a free port < 32768, with its own temp dir (MMS keeps a pid
    file there and refuses a second server sharing it)."""

    def __init__(
        self,
        serve_cmd: list[str] | None = None,
        port: int | None = None,
        work_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.serve_cmd = serve_cmd or list(SERVE_CMD)
        self.port = port
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="mme-local-container-"))
        self.extra_env = dict(env or {})
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.work_dir / "container.log"
        self.base_url = ""
        self.tmp_dir: Path | None = None

    def _fresh_tmp(self) -> Path:
        """A new, short temp dir per start: the server puts unix sockets there (108-byte path limit) and MMS
        keeps a pid file there that a killed predecessor may have left behind."""
        self._drop_tmp()
        base = "/tmp" if os.path.isdir("/tmp") else None
        self.tmp_dir = Path(tempfile.mkdtemp(prefix="mmel-", dir=base))
        return self.tmp_dir

    def _drop_tmp(self) -> None:
        if self.tmp_dir is not None:
            shutil.rmtree(self.tmp_dir, ignore_errors=True)
            self.tmp_dir = None

    def build_env(self, port: int) -> dict[str, str]:
        tmp = self.tmp_dir or self._fresh_tmp()
        env = dict(os.environ)
        env.update(
            {
                "SAGEMAKER_BIND_TO_PORT": str(port),
                "SAGEMAKER_MULTI_MODEL": "true",
                "TMPDIR": str(tmp),
                "TEMP": str(tmp),
                "TMP": str(tmp),
            }
        )
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 120.0) -> str:
        exe = Path(self.serve_cmd[0])
        if exe.is_absolute() and not os.access(exe, os.X_OK):
            raise RuntimeStartError(f"{exe} is missing or not executable")
        if self.proc is not None:  # a restart: end whatever the previous run left behind
            self._terminate(5)
        attempts = 1 if self.port else 3
        for attempt in range(attempts):
            port = self.port or free_port()
            self.base_url = f"http://127.0.0.1:{port}"
            self._fresh_tmp()
            self._spawn(self.serve_cmd, self.build_env(port), cwd=self.work_dir)
            try:
                wait_for_ping(self.base_url, self.proc, self.log_path, timeout)
                return self.base_url
            except RuntimeStartError:
                self._terminate(5)
                # Someone may have taken the port between our check and the server's bind: try another.
                if attempt == attempts - 1 or "port" not in _tail(self.log_path).lower():
                    raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 20.0) -> None:
        self._terminate(timeout)
        self._drop_tmp()

    def model_url(self, local_dir: Path) -> str:
        return str(Path(local_dir).resolve())

    def describe(self) -> str:
        return f"process {' '.join(self.serve_cmd)} on {self.base_url} (log {self.log_path})"


def find_container_cli(explicit: str | None = None) -> str:
    """--container-cli, else $CONTAINER_CLI, else docker, else podman (on PATH; a working engine first)."""
    choice = explicit or os.environ.get("CONTAINER_CLI")
    if choice:
        return choice
    found = [c for c in ("docker", "podman") if shutil.which(c)]
    if not found:
        raise RuntimeStartError("no container CLI found: install docker or podman, or pass --container-cli")
    if len(found) > 1:
        # A docker CLI without a daemon is common (e.g. podman machines): prefer the one that works.
        for candidate in found:
            if engine_works(candidate):
                return candidate
    return found[0]


def engine_works(cli: str, timeout: float = 15.0) -> bool:
    """True when `cli info` succeeds, i.e. the engine behind the CLI answers."""
    try:
        done = subprocess.run(
            [cli, "info"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


class DockerRuntime(_Subprocess):
    """The image under docker or podman, as SageMaker runs it: `run ... IMAGE serve`, port published on
    loopback only, the harness's model directory mounted read-only at /opt/ml/models."""

    def __init__(
        self,
        image: str,
        models_dir: Path,
        cli: str | None = None,
        port: int | None = None,
        container_port: int = 8080,
        name: str | None = None,
        log_dir: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.image = image
        self.extra_env = dict(env or {})
        self.models_dir = Path(models_dir).resolve()
        self.cli = find_container_cli(cli)
        self.port = port or free_port()
        self.container_port = container_port
        self.name = name or f"mme-local-{uuid.uuid4().hex[:10]}"
        self.log_path = Path(log_dir or tempfile.mkdtemp(prefix="mme-local-docker-")) / "container.log"
        self.base_url = f"http://127.0.0.1:{self.port}"

    def argv(self) -> list[str]:
        return [
            self.cli,
            "run",
            "--rm",
            "--name",
            self.name,
            "-p",
            f"127.0.0.1:{self.port}:{self.container_port}",
            "-v",
            f"{self.models_dir}:{CONTAINER_MODELS_DIR}:ro",
            "-e",
            "SAGEMAKER_MULTI_MODEL=true",
            "-e",
            f"SAGEMAKER_BIND_TO_PORT={self.container_port}",
            *(arg for k, v in sorted(self.extra_env.items()) for arg in ("-e", f"{k}={v}")),
            "--init",
            self.image,
            "serve",
        ]

    def start(self, timeout: float = 180.0) -> str:
        if self.proc is not None:  # a restart: make sure the previous container is gone
            self.stop(5)
        self._spawn(self.argv(), dict(os.environ))
        try:
            wait_for_ping(self.base_url, self.proc, self.log_path, timeout)
        except RuntimeStartError:
            self.stop(10)
            raise
        return self.base_url

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is not None:
            # Stopping the CLI client alone may leave the container running under the engine.
            subprocess.run(
                [self.cli, "stop", "-t", str(int(timeout)), self.name],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=timeout + 15,
                check=False,
            )
        self._terminate(timeout)

    def model_url(self, local_dir: Path) -> str:
        rel = Path(local_dir).resolve().relative_to(self.models_dir)
        return f"{CONTAINER_MODELS_DIR}/{rel.as_posix()}"

    def describe(self) -> str:
        return f"{self.cli} image {self.image} on {self.base_url} ({' '.join(self.argv())})"


class ExternalRuntime:
    """A container someone else started (for debugging it); the harness only talks to it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def start(self, timeout: float = 120.0) -> str:
        wait_for_ping(self.base_url, None, Path("/nonexistent"), timeout)
        return self.base_url

    def stop(self, timeout: float = 20.0) -> None:
        return None

    def alive(self) -> bool:
        return True

    def model_url(self, local_dir: Path) -> str:
        return str(Path(local_dir).resolve())

    def describe(self) -> str:
        return f"external container at {self.base_url}"

