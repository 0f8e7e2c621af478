"""`container/serve`: multi-model-server in SageMaker MME mode, in the foreground.

Starts the Java front (MMS's ModelServer, configured in mms_front.py) directly rather than through the
`multi-model-server` launcher, whose pid file in the temp dir forbids a second server per host. Each server
gets a private run directory (config, Java temp dir, zygote socket, memory ledger: in /dev/shm when there
is one, linked from there), so several run side by side.
With MME_BACKEND=hosts (default) small models are served by a few host processes forked from a pre-warmed
zygote (hosts.py), with zygote each model gets a worker forked from it (zygote.py);
MME_BACKEND=vanilla gives each model a fresh interpreter, as stock MMS does, for comparison.
SIGTERM stops Java, the zygote and every backend: nothing is left behind.

`serve` is a subreaper: workers outlive a zygote that dies (they follow their model's launcher), and come
here. It reaps them (forgetting their memory-ledger records) and, when it stops, ends every process left
below it, whatever a model's code started.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sklearn_mme.container import mms_front
from sklearn_mme.container.ledger import MemoryLedger
from sklearn_mme.container.procutil import become_subreaper, die_with_parent, end_descendants, kill_group
from sklearn_mme.container.settings import ServeSettings, SettingsError, Wiring

STOP_GRACE_S = 5.0
DRAIN_S = 20.0  # SageMaker waits 30 s after SIGTERM; leave room for MMS to stop


def log(msg: str) -> None:
    print(f"[serve] {msg}", flush=True)


def _short_tmp() -> str | None:
    """TMPDIR unless it is too deep for Unix socket paths (107 bytes, ours nest ~40 deeper)."""
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 60 else "/tmp"


def _memory_dir(run: Path) -> Path | None:
    """A directory for the memory ledger in /dev/shm (tmpfs), linked from run/ledger; None: run/ledger itself.

    Every load and unload replaces its process's ledger file by a rename, and on ext4 a rename over a file
    (auto_da_alloc) starts the writeback of the new one: 0.1 ms on a quiet disk, up to ~18 ms on a busy one,
    inside the load's answer. The ledger lives only as long as the server, so it needs no disk.
    """
    try:
        shm = Path(tempfile.mkdtemp(prefix="mme-ledger-", dir="/dev/shm"))
    except OSError:
        return None
    (run / "ledger").symlink_to(shm)
    return shm


class Server:
    def __init__(self, s: ServeSettings) -> None:
        self.s = s
        self.run = Path(tempfile.mkdtemp(prefix="mme-serve-", dir=_short_tmp()))
        (self.run / "tmp").mkdir()
        self.memory_dir = _memory_dir(self.run)
        if self.memory_dir is None:
            (self.run / "ledger").mkdir()
        self.zygote: subprocess.Popen | None = None
        self.java: subprocess.Popen | None = None
        self.stopping = False
        self.zygote_restarts = 0
        self.launcher_kind = "native"  # start() finds out; only the C launcher has a spare mode

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["SAGEMAKER_BIND_TO_PORT"] = str(self.s.port)
        env.update(Wiring(
            state_dir=str(self.run / "ledger"),
            zygote_socket=str(self.run / "zygote.sock"),
            max_response_bytes=self.s.max_response_bytes,
            memory_budget_bytes=self.s.memory_budget_bytes,
            memory_reserve_bytes=self.s.memory_reserve_bytes,
            worker_memory_limit_bytes=self.s.worker_memory_limit_bytes,
            host_count=self._host_count(),
            host_max_artifact_bytes=self.s.host_max_artifact_bytes if self.s.backend == "hosts" else None,
            host_slow_ms=self.s.host_slow_ms,
            metrics_max_models=self.s.metrics_max_models,
            idle_connection_timeout_s=self.s.idle_connection_timeout_s,
            max_connections=self.s.max_connections,
            emf_interval_s=self.s.emf_interval_s,
            emf_namespace=self.s.emf_namespace,
            emf_dimensions=",".join(f"{k}={v}" for k, v in self.s.emf_dimensions or ()) or None,
            stage_log=self.s.stage_log,
            scale_max_workers=self._scale_max_workers(),
            scale_up_wait_ms=self.s.scale_up_wait_ms,
            scale_down_idle_s=self.s.scale_down_idle_s,
            spare_launchers=self.s.spare_launchers if self.launcher_kind == "native" else 0,
            warmup_loads=0 if self.s.backend == "vanilla" else self.s.warmup_loads,
            warmup_model=None if self.s.backend == "vanilla" else str(self.run / "warm-up-model"),
        ).to_env())
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        return env

    def _scale_max_workers(self) -> int:
        """MME_MAX_WORKERS_PER_MODEL, else one per usable core; vanilla keeps MMS's fixed count."""
        if self.s.backend == "vanilla":
            return 0
        if self.s.max_workers_per_model is not None:
            return self.s.max_workers_per_model
        return len(os.sched_getaffinity(0))

    def _host_count(self) -> int | None:
        """MME_BACKEND=hosts: MME_HOSTS, else one host per core this process may run on."""
        if self.s.backend != "hosts":
            return None
        return self.s.hosts or len(os.sched_getaffinity(0))

    def start_zygote(self) -> None:
        sock = self.run / "zygote.sock"
        self.zygote = subprocess.Popen(
            [sys.executable, "-m", "sklearn_mme.container.zygote", "--socket", str(sock),
             "--handler", self.s.handler],
            env=self.env(), preexec_fn=lambda: die_with_parent(signal.SIGTERM),
        )
        # Our MMS plugin counts the zygote's descriptors too before a load (container/java Descriptors).
        (self.run / "ledger" / "zygote-pid").write_text(f"{self.zygote.pid}\n")
        deadline = time.monotonic() + self.s.startup_timeout_s
        while not sock.exists():
            if self.zygote.poll() is not None:
                raise RuntimeError(f"zygote exited with {self.zygote.returncode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("zygote did not become ready in time")
            time.sleep(0.02)

    def start(self) -> None:
        s = self.s
        (self.run / "config.properties").write_text(mms_front.mms_properties(s))
        python = mms_front.launcher_executable(self.run, s)
        script = python.read_bytes()[:2] == b"#!"
        kind = "shell" if s.backend == "vanilla" else "python" if script else "native"
        self.launcher_kind = kind
        log(f"port {s.port}, backend {s.backend}, launcher {kind}, workers/model {s.workers_per_model}, "
            f"run dir {self.run}")
        cmd = mms_front.java_command(s, self.run, python)
        if s.backend in ("zygote", "hosts"):
            self.start_zygote()
        # Java leads its own process group (its backends and launchers go down with it) but stays in our
        # session: with autogroup scheduling a new session would get its own CPU share apart from the workers.
        self.java = subprocess.Popen(cmd, env=self.env(), cwd=self.run, process_group=0,
                                     preexec_fn=lambda: die_with_parent(signal.SIGKILL))
        mms_front.await_plugin(s.port, self.java, s.startup_timeout_s)

    def wait(self) -> int:
        assert self.java is not None
        while not self.stopping:
            code = self.java.poll()
            if code is not None:
                log(f"model server exited with {code}")
                return code if code else 1
            if self.zygote is not None and self.zygote.poll() is not None and not self.stopping:
                # The launchers of running models keep serving; new loads need a zygote again.
                log(f"zygote exited with {self.zygote.returncode}; restarting it")
                self.zygote_restarts += 1  # GET /metrics reports it (mme_container_zygote_restarts_total)
                (self.run / "ledger" / "zygote-restarts").write_text(f"{self.zygote_restarts}\n")
                self.start_zygote()
            self.reap_orphans()
            time.sleep(0.2)
        return 0

    def reap_orphans(self) -> None:
        """Reap adopted processes (a dead zygote's workers), never Java or the zygote (Popen reaps those)."""
        ours = {p.pid for p in (self.java, self.zygote) if p is not None}
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None or info.si_pid in ours:
                return
            os.waitpid(info.si_pid, 0)
            MemoryLedger(self.run / "ledger").forget(info.si_pid)

    def stop(self) -> None:
        """Drain then stop: workers finish the requests MMS already handed them, then MMS goes."""
        self.stopping = True
        if self.zygote is not None and self.zygote.poll() is None:
            self.zygote.terminate()
            try:
                self.zygote.wait(DRAIN_S)
            except subprocess.TimeoutExpired:
                log("zygote did not drain in time; killing it")
                self.zygote.kill()
                self.zygote.wait()
        if self.java is not None and self.java.poll() is None:
            kill_group(self.java.pid, signal.SIGTERM)
            try:
                self.java.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log("model server did not stop in time; killing it")
        if self.java is not None:
            kill_group(self.java.pid, signal.SIGKILL)
            self.java.wait()
        left = end_descendants()
        if left:
            log(f"ended {left} processes left behind (workers of a dead zygote, or what models started)")
        shutil.rmtree(self.run, ignore_errors=True)
        if self.memory_dir is not None:
            shutil.rmtree(self.memory_dir, ignore_errors=True)


def main() -> int:
    try:
        settings = ServeSettings.from_env()
    except SettingsError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2
    if len(sys.argv) > 1 and sys.argv[1] not in ("serve",):
        print(f"serve: error: unknown command {sys.argv[1]!r} (expected 'serve' or nothing)", file=sys.stderr)
        return 2
    become_subreaper()
    server = Server(settings)
    signal.signal(signal.SIGTERM, lambda *_: setattr(server, "stopping", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(server, "stopping", True))
    try:
        server.start()
        code = server.wait()
    except (SettingsError, RuntimeError) as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        code = 1
    finally:
        server.stop()
    log("stopped")
    return code


if __name__ == "__main__":
    sys.exit(main())
