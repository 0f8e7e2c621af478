"""`container/serve`: multi-model-server in SageMaker MME mode, in the foreground.

Starts the Java front (MMS's ModelServer) directly rather than through the `multi-model-server`
launcher, whose pid file in the temp dir forbids a second server per host. Each server gets a private
run directory (config, Java temp dir, zygote socket, memory ledger), so several run side by side.
With MME_BACKEND=zygote (default) models are forked from a pre-warmed zygote (see zygote.py);
MME_BACKEND=vanilla gives each model a fresh interpreter, as stock MMS does, for comparison.
SIGTERM stops Java, the zygote and every backend: nothing is left behind.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path

import mms
from sklearn_mme.container.procutil import die_with_parent, kill_group
from sklearn_mme.container.settings import ServeSettings, SettingsError, Wiring

STOP_GRACE_S = 5.0
DRAIN_S = 20.0  # SageMaker waits 30 s after SIGTERM; leave room for MMS to stop
PLUGIN_JAR = "mme-mms-plugin.jar"
LIB = Path(__file__).resolve().parent / "lib"  # compiled by container/build_native.sh


def log(msg: str) -> None:
    print(f"[serve] {msg}", flush=True)


def mms_properties(s: ServeSettings) -> str:
    return "\n".join([
        f"inference_address=http://0.0.0.0:{s.port}",
        f"management_address=http://0.0.0.0:{s.port}",  # same port: MMS then serves the MME routes
        "model_store=/",
        f"default_workers_per_model={s.workers_per_model}",
        f"default_response_timeout_seconds={s.response_timeout_s}",
        f"unregister_model_timeout={max(1, s.response_timeout_s // 60)}",
        f"default_service_handler={s.handler}",
        f"max_request_size={s.max_payload_bytes + 64 * 1024}",  # body limit plus room for headers
        f"max_response_size={s.max_response_bytes}",
        "decode_input_request=false",
        "preload_model=false",
        "async_logging=true",
        "metric_time_interval=300",  # MMS's host-metrics collector: a fresh Python each time
        "",
    ])


def native_launcher(explicit: str | None) -> Path | None:
    """The compiled launcher (MME_LAUNCHER_BIN, else the one scripts/setup.sh and the Dockerfile build)."""
    path = Path(explicit) if explicit else LIB / "mme-launcher"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def _launcher(run: Path, s: ServeSettings) -> Path:
    """The executable MMS runs as 'python' for each model."""
    path = run / "python-launcher"
    native = native_launcher(s.launcher_bin) if s.launcher in ("auto", "c") else None
    if s.backend == "vanilla":
        path.write_text(f'#!/bin/sh\nshift\nexec "{sys.executable}" -m sklearn_mme.container.backend "$@"\n')
    elif native is not None:
        shutil.copy(native, path)
        (run / "python-launcher.conf").write_text(f"{sys.executable}\n{run / 'zygote.sock'}\n")
    elif s.launcher == "c":
        raise SettingsError("MME_LAUNCHER=c but no compiled launcher was found (run scripts/setup.sh)")
    else:
        source = resources.files("sklearn_mme.container").joinpath("launcher.py").read_text()
        # -I -S: no site-packages, no PYTHON* env: starts in ~10 ms with only the stdlib it needs.
        path.write_text(f"#!{sys.executable} -IS\n{source}")
    path.chmod(0o755)
    return path


def _java_cmd(s: ServeSettings, run: Path, python: Path) -> list[str]:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else "java"
    if shutil.which(java) is None:
        raise SettingsError("java not found: install a Java 17 runtime (openjdk-17-jre-headless)")
    mms_home = Path(mms.__file__).resolve().parent.parent
    log4j = resources.files("sklearn_mme.container").joinpath("etc/log4j2.xml")
    classpath = ":".join([".", f"{mms_home / 'mms' / 'frontend'}/*", *_plugin_jar()])
    return [
        java, f"-Dmodel_server_home={mms_home}", f"-Dlog4j.configurationFile=file://{log4j}",
        f"-Djava.io.tmpdir={run / 'tmp'}", *s.java_opts,
        "--add-opens=java.base/java.lang=ALL-UNNAMED",  # our plugin shortens the process reaper's keep-alive
        "-cp", classpath, "com.amazonaws.ml.mms.ModelServer",
        "--python", str(python), "-f", str(run / "config.properties"),
    ]


def _plugin_jar() -> list[str]:
    """Our MMS plugin (container/java): on unload, lets the request in the worker finish and answers the
    queued ones 404; refuses loads MMS cannot start with 400; unregisters a failed load before answering
    it, with its reason; lets MMS's idle worker threads go after 2 s instead of 60. Built by
    scripts/setup.sh and the Dockerfile. Without it MMS misbehaves under faults: refuse to start."""
    jar = LIB / PLUGIN_JAR
    if not jar.is_file():
        raise SettingsError(f"the MMS plugin {jar} is missing: build it with scripts/setup.sh")
    _check_plugin_built_for(jar, Path(mms.__file__).resolve().parent / "frontend" / "model-server.jar")
    return [str(jar)]


def _check_plugin_built_for(jar: Path, mms_jar: Path) -> None:
    """The plugin reads MMS's private fields: it must run on the very MMS it was compiled against."""
    try:
        with zipfile.ZipFile(jar) as z:
            lines = z.read("mme-plugin.properties").decode("utf-8").splitlines()
    except (OSError, KeyError, zipfile.BadZipFile) as exc:
        raise SettingsError(f"the MMS plugin {jar} does not say which MMS it was built for ({exc}): "
                            "rebuild it with scripts/setup.sh") from None
    built = dict(line.split("=", 1) for line in lines if "=" in line)
    installed = importlib.metadata.version("multi-model-server")
    digest = hashlib.sha256(mms_jar.read_bytes()).hexdigest()
    # The digest decides; the version is recorded when the build could see MMS's metadata (not in the image's
    # plugin stage, which gets the bare jar).
    version_differs = built.get("mms.version", "unknown") not in ("unknown", installed)
    if version_differs or built.get("mms.jar.sha256") != digest:
        raise SettingsError(
            f"the MMS plugin was built against MMS {built.get('mms.version')} (jar sha256 "
            f"{built.get('mms.jar.sha256', '?')[:12]}), but MMS {installed} (jar sha256 {digest[:12]}) is "
            "installed: rebuild it with scripts/setup.sh")


def _await_plugin(port: int, java: subprocess.Popen, timeout: float) -> None:
    """Wait until MMS answers and our plugin says it took over MMS's workload manager."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if java.poll() is not None:
            return  # wait() reports the exit
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/mme", timeout=2) as resp:
                state = json.loads(resp.read())
            if state.get("guarded_workload_manager") is True and _metrics_ready(port):
                return
            last = "GET /mme: " + json.dumps(state)
            if state.get("install_failed"):
                break
        except urllib.error.HTTPError as exc:
            last = f"GET /mme answered {exc.code}"
        except (OSError, ValueError) as exc:
            last = str(exc)
        time.sleep(0.05)
    raise RuntimeError(f"the MMS plugin did not install ({last}); see the log above")


def _metrics_ready(port: int) -> bool:
    """GET /metrics answers 503 until our plugin sees every new connection (ChannelHook.java)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            return resp.status == 200
    except (OSError, ValueError):
        return False


def _short_tmp() -> str | None:
    """TMPDIR unless it is too deep for Unix socket paths (107 bytes, ours nest ~40 deeper)."""
    tmp = tempfile.gettempdir()
    return tmp if len(tmp) <= 60 else "/tmp"


class Server:
    def __init__(self, s: ServeSettings) -> None:
        self.s = s
        self.run = Path(tempfile.mkdtemp(prefix="mme-serve-", dir=_short_tmp()))
        (self.run / "tmp").mkdir()
        (self.run / "ledger").mkdir()
        self.zygote: subprocess.Popen | None = None
        self.java: subprocess.Popen | None = None
        self.stopping = False
        self.zygote_restarts = 0

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
            metrics_max_models=self.s.metrics_max_models,
            emf_interval_s=self.s.emf_interval_s,
            emf_namespace=self.s.emf_namespace,
            emf_dimensions=",".join(f"{k}={v}" for k, v in self.s.emf_dimensions or ()) or None,
        ).to_env())
        env.setdefault("OMP_NUM_THREADS", "1")
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
        return env

    def start_zygote(self) -> None:
        sock = self.run / "zygote.sock"
        self.zygote = subprocess.Popen(
            [sys.executable, "-m", "sklearn_mme.container.zygote", "--socket", str(sock),
             "--handler", self.s.handler],
            env=self.env(), preexec_fn=lambda: die_with_parent(signal.SIGTERM),
        )
        deadline = time.monotonic() + self.s.startup_timeout_s
        while not sock.exists():
            if self.zygote.poll() is not None:
                raise RuntimeError(f"zygote exited with {self.zygote.returncode} while starting")
            if time.monotonic() > deadline:
                raise RuntimeError("zygote did not become ready in time")
            time.sleep(0.02)

    def start(self) -> None:
        s = self.s
        (self.run / "config.properties").write_text(mms_properties(s))
        python = _launcher(self.run, s)
        script = python.read_bytes()[:2] == b"#!"
        kind = "shell" if s.backend == "vanilla" else "python" if script else "native"
        log(f"port {s.port}, backend {s.backend}, launcher {kind}, workers/model {s.workers_per_model}, "
            f"run dir {self.run}")
        cmd = _java_cmd(s, self.run, python)
        if s.backend == "zygote":
            self.start_zygote()
        # Java leads its own process group (its backends and launchers go down with it) but stays in our
        # session: with autogroup scheduling a new session would get its own CPU share apart from the workers.
        self.java = subprocess.Popen(cmd, env=self.env(), cwd=self.run, process_group=0,
                                     preexec_fn=lambda: die_with_parent(signal.SIGKILL))
        _await_plugin(s.port, self.java, s.startup_timeout_s)

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
            time.sleep(0.2)
        return 0

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
        shutil.rmtree(self.run, ignore_errors=True)


def main() -> int:
    try:
        settings = ServeSettings.from_env()
    except SettingsError as exc:
        print(f"serve: error: {exc}", file=sys.stderr)
        return 2
    if len(sys.argv) > 1 and sys.argv[1] not in ("serve",):
        print(f"serve: error: unknown command {sys.argv[1]!r} (expected 'serve' or nothing)", file=sys.stderr)
        return 2
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
