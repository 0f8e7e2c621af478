"""MMS's Java front as `serve` runs it: its properties, the JVM command line, our plugin on its class path
(present, built for this very MMS, installed), and the executable MMS runs as 'python' for each model.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from importlib import resources
from pathlib import Path

import mms

from sklearn_mme.container.settings import ServeSettings, SettingsError

PLUGIN_JAR = "mme-mms-plugin.jar"
LIB = Path(__file__).resolve().parent / "lib"  # compiled by container/build_native.sh


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


def launcher_executable(run: Path, s: ServeSettings) -> Path:
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


def java_command(s: ServeSettings, run: Path, python: Path) -> list[str]:
    java_home = os.environ.get("JAVA_HOME")
    java = str(Path(java_home) / "bin" / "java") if java_home else "java"
    if shutil.which(java) is None:
        raise SettingsError("java not found: install a Java 17 runtime (openjdk-17-jre-headless)")
    mms_home = Path(mms.__file__).resolve().parent.parent
    log4j = resources.files("sklearn_mme.container").joinpath("etc/log4j2.xml")
    classpath = ":".join([".", f"{mms_home / 'mms' / 'frontend'}/*", *plugin_jar()])
    return [
        java, f"-Dmodel_server_home={mms_home}", f"-Dlog4j.configurationFile=file://{log4j}",
        f"-Djava.io.tmpdir={run / 'tmp'}",
        # MMS starts each model's launcher with Runtime.exec. Java 17's default (posix_spawn) execs
        # jspawnhelper first, which then execs the launcher: vfork + one exec is ~2.5 ms less of every
        # cold load (bench --load-breakdown). Before the user's options, so their own setting wins.
        "-Djdk.lang.Process.launchMechanism=VFORK",
        *s.java_opts,
        "--add-opens=java.base/java.lang=ALL-UNNAMED",  # our plugin shortens the process reaper's keep-alive
        "-cp", classpath, "com.amazonaws.ml.mms.ModelServer",
        "--python", str(python), "-f", str(run / "config.properties"),
    ]


def plugin_jar() -> list[str]:
    """Our MMS plugin (container/java): on unload, lets the request in the worker finish and answers the
    queued ones 404; refuses loads MMS cannot start with 400; unregisters a failed load before answering
    it, with its reason; lets MMS's idle worker threads go after 2 s instead of 60. Built by
    scripts/setup.sh and the Dockerfile. Without it MMS misbehaves under faults: refuse to start."""
    jar = LIB / PLUGIN_JAR
    if not jar.is_file():
        raise SettingsError(f"the MMS plugin {jar} is missing: build it with scripts/setup.sh")
    check_plugin_built_for(jar, Path(mms.__file__).resolve().parent / "frontend" / "model-server.jar")
    return [str(jar)]


def check_plugin_built_for(jar: Path, mms_jar: Path) -> None:
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


def await_plugin(port: int, java: subprocess.Popen, timeout: float) -> None:
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
