"""Starting and, above all, stopping the servers under test, each in a private directory.

Every process a server ever had is remembered (psutil objects, safe against pid reuse), so teardown
can prove that nothing is left running, whatever the server's own shutdown did.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import psutil

from bench import procmem
from bench.client import MMS, Protocol
from sklearn_mme.container import ports
from sklearn_mme.container.procutil import die_with_parent

REPO = Path(__file__).resolve().parent.parent
SERVE = REPO / "container" / "serve"
VENV_BIN = Path(sys.executable).parent

UNLOAD_SETTLE_S = 5.0  # idle time before the after-unload memory figure (bench.cli.measure, bench.scale)


def vanilla_properties(port: int) -> str:
    """The toolkit's MME config (sagemaker_inference/etc/mme-mms.properties plus what it generates)."""
    return "\n".join([
        "enable_envvars_config=true",
        f"inference_address=http://127.0.0.1:{port}",
        f"management_address=http://127.0.0.1:{port}",  # the same address: only then MMS has the MME routes
        "model_store=/",
        # The toolkit's DefaultHandlerService; see reference_handler.py for the one-line sys.path fix.
        "default_service_handler=bench.reference_handler",
        "default_workers_per_model=1",
        "async_logging=true",
        "decode_input_request=false",
        "default_response_timeout_seconds=60",
        "vmargs=-XX:-UseContainerSupport",  # the toolkit's default vmargs
        "",
    ])


class Server:
    """A server process tree under test. Subclasses say how to start it and how it likes to stop."""

    label = "server"
    startup_timeout_s = 120.0
    protocol: Protocol = MMS  # how the bench asks it to load, invoke, unload

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = ports.free_port()  # below MMS's port limit, so port 0 won't do
        self.proc: subprocess.Popen | None = None
        self.seen: dict[int, psutil.Process] = {}
        self.startup_s = 0.0
        self.killed: list[str] = []  # alive after the server's own stop, so we SIGKILLed them
        self.leftovers: list[str] = []  # alive even after that

    @property
    def log_path(self) -> Path:
        return self.workdir / "server.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        raise NotImplementedError

    def start(self) -> None:
        t0 = time.perf_counter()
        with open(self.log_path, "ab") as log:
            # Own session: a Ctrl-C in the terminal reaches the bench, which then stops this in order.
            # PDEATHSIG: if the bench itself is killed, the server is told to stop too.
            self.proc = subprocess.Popen(
                self.command(), env=self.environment(), cwd=self.workdir, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=lambda: die_with_parent(signal.SIGTERM),
            )
        self.seen[self.proc.pid] = psutil.Process(self.proc.pid)
        self._wait_ping()
        self.startup_s = time.perf_counter() - t0

    def _wait_ping(self) -> None:
        proc = self.proc
        assert proc is not None
        try:
            ports.wait_for_ping(f"http://127.0.0.1:{self.port}", self.startup_timeout_s,
                                lambda: proc.poll() is None)
        except ports.NotReady as exc:
            raise RuntimeError(f"{self.label} {exc} (exit status {proc.poll()}):\n"
                               f"{self.log_tail()}") from None

    def snapshot(self, settled: bool = True) -> procmem.Snapshot:
        assert self.proc is not None
        if settled:
            return procmem.settled_snapshot(self.proc.pid, self.seen)
        return procmem.snapshot(self.proc.pid, self.seen)

    def cpu_seconds(self) -> float:
        assert self.proc is not None
        return procmem.cpu_seconds(self.proc.pid)

    def process_count(self) -> int:
        assert self.proc is not None
        return len(procmem.walk(self.proc.pid))

    def _request_stop(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop the whole tree; whatever survives the server's own shutdown gets SIGKILL. Never raises."""
        if self.proc is None:
            return
        for proc, _ in procmem.walk(self.proc.pid):
            self.seen.setdefault(proc.pid, proc)
        try:
            self._request_stop()
        except Exception as exc:
            print(f"[bench] {self.label}: orderly stop failed: {exc}", file=sys.stderr)
        # What the server's own shutdown left behind: a finding in itself, then SIGKILL.
        survivors = procmem.alive(self.seen.values())
        self.killed = [f"{p.pid} {procmem.cmdline(p)[:80]}" for p in survivors]
        for proc in survivors:
            try:
                proc.kill()
            except psutil.Error:
                pass
        _, still = psutil.wait_procs(procmem.alive(self.seen.values()), timeout=5)
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.leftovers = [f"{p.pid} {procmem.cmdline(p)[:80]}" for p in procmem.alive(still)]
        if self.leftovers:
            print(f"[bench] {self.label}: processes left running: {self.leftovers}", file=sys.stderr)

    def wait_gone(self, timeout_s: float) -> None:
        """Wait until every remembered process has exited (bounded)."""
        psutil.wait_procs(procmem.alive(self.seen.values()), timeout=timeout_s)


class Ours(Server):
    """`container/serve`: MMS's Java front with our backends (zygote forks by default)."""

    def __init__(self, workdir: Path, backend: str = "zygote",
                 extra_env: dict[str, str] | None = None) -> None:
        super().__init__(workdir)
        self.backend = backend
        self.extra_env = dict(extra_env or {})
        # MME_BACKEND=vanilla: our handler, but a fresh interpreter per model (shows where the gain is);
        # hosts: small models share a few host processes (container/hosts.py).
        self.label = {"zygote": "ours", "vanilla": "ours-fresh"}.get(backend, f"ours-{backend}")

    def command(self) -> list[str]:
        return [str(SERVE)]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MME_", "SAGEMAKER_"))}
        env.update(SAGEMAKER_BIND_TO_PORT=str(self.port), SAGEMAKER_MULTI_MODEL="true",
                   MME_BACKEND=self.backend, TMPDIR=str(self.workdir))  # its run dir lands in our directory
        env.update(self.extra_env)
        return env

    def _request_stop(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # serve stops Java, the zygote and every backend
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(f"[bench] {self.label}: serve did not stop within 30 s", file=sys.stderr)
        self.wait_gone(5)


class VanillaMMS(Server):
    """Stock MMS through its real launcher, the toolkit's handler, a fresh python per model."""

    label = "vanilla"
    protocol = Protocol("vanilla")  # its model dirs also hold code/inference.py

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        # The launcher keeps `.model_server.pid` in the temp dir and refuses a second server: own one.
        self.tmp = workdir / "tmp"
        self.tmp.mkdir(exist_ok=True)
        self.config = workdir / "mms.properties"
        self.config.write_text(vanilla_properties(self.port))

    def command(self) -> list[str]:
        log_config = resources.files("sagemaker_inference").joinpath("etc/log4j2.xml")  # as the toolkit
        return [str(VENV_BIN / "multi-model-server"), "--start", "--foreground",
                "--mms-config", str(self.config), "--model-store", "/", "--log-config", str(log_config)]

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MME_", "SAGEMAKER_"))}
        # MMS puts the model dir on each backend's PYTHONPATH after this one; ours makes
        # bench.reference_handler importable. LOG_LOCATION keeps the toolkit's log files private.
        pythonpath = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        env.update(SAGEMAKER_MULTI_MODEL="true", TMPDIR=str(self.tmp), TEMP=str(self.tmp),
                   PYTHONPATH=pythonpath, LOG_LOCATION=str(self.workdir / "logs"),
                   METRICS_LOCATION=str(self.workdir / "logs"))
        return env

    def _request_stop(self) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)  # launcher, Java, backends, workers: one group
        except ProcessLookupError:
            pass
        self.wait_gone(15)
        # The launcher's own stop: kills what its pid file names and removes the pid file.
        subprocess.run([str(VENV_BIN / "multi-model-server"), "--stop"], env=self.environment(),
                       cwd=self.workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60,
                       check=False)


def make_server(kind: str, workdir: Path, ours_env: dict[str, str] | None = None) -> Server:
    """`ours`, `vanilla`, `ours-fresh` (container/serve with MME_BACKEND=vanilla), `ours-hosts`
    (MME_BACKEND=hosts), `mlserver` or `mlserver-inproc` (bench/mlserver.py), not yet started."""
    if kind.startswith("mlserver"):
        from bench import mlserver  # imports this module

        return mlserver.make(kind, workdir)
    if kind == "vanilla":
        return VanillaMMS(workdir)
    backend = {"ours-fresh": "vanilla", "ours-hosts": "hosts"}.get(kind, "zygote")
    return Ours(workdir, backend=backend, extra_env=ours_env)


def layout(kind: str) -> str:
    """Which model directories a server kind loads: vanilla needs code/inference.py."""
    return "vanilla" if kind == "vanilla" else "ours"


def remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def wait_processes(server: Server, at_most: int, timeout_s: float) -> None:
    """After the DELETEs, wait (bounded) until the tree is back to its idle process count."""
    deadline = time.monotonic() + timeout_s
    while server.process_count() > at_most and time.monotonic() < deadline:
        time.sleep(0.2)
