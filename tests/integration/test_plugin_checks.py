"""`serve` checks our MMS plugin instead of hoping for it: built for the installed MMS (the jar records the
MMS version and jar digest it was compiled against), and installed (GET /mme) before serve carries on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import mms
import pytest

from sklearn_mme.container import mms_front
from sklearn_mme.container.settings import SettingsError

MMS_JAR = Path(mms.__file__).resolve().parent / "frontend" / "model-server.jar"


def _with_properties(tmp_path: Path, text: str | None) -> Path:
    """A copy of the built plugin jar whose mme-plugin.properties is `text` (None: left out)."""
    out = tmp_path / "plugin.jar"
    with zipfile.ZipFile(mms_front.LIB / mms_front.PLUGIN_JAR) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            if item.filename != "mme-plugin.properties":
                dst.writestr(item, src.read(item))
        if text is not None:
            dst.writestr("mme-plugin.properties", text)
    return out


def test_the_built_plugin_matches_the_installed_mms() -> None:
    mms_front.check_plugin_built_for(mms_front.LIB / mms_front.PLUGIN_JAR, MMS_JAR)  # no exception


@pytest.mark.parametrize(
    ("properties", "says"),
    [
        ("mms.version=1.1.10\nmms.jar.sha256=0\n", "built against MMS 1.1.10"),
        (None, "does not say which MMS"),
    ],
)
def test_a_plugin_built_for_another_mms_is_refused(tmp_path: Path, properties: str | None, says: str) -> None:
    with pytest.raises(SettingsError, match=says):
        mms_front.check_plugin_built_for(_with_properties(tmp_path, properties), MMS_JAR)


def test_a_different_mms_jar_of_the_same_version_is_refused(tmp_path: Path) -> None:
    other = tmp_path / "model-server.jar"
    shutil.copy(MMS_JAR, other)
    with open(other, "ab") as f:
        f.write(b"\0")
    with pytest.raises(SettingsError, match="rebuild it with scripts/setup.sh"):
        mms_front.check_plugin_built_for(mms_front.LIB / mms_front.PLUGIN_JAR, other)


@pytest.fixture()
def fake_mme() -> Iterator[tuple[int, dict]]:
    """An HTTP server answering GET /mme with whatever the test puts in `state`."""
    state: dict = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(state).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], state
    finally:
        httpd.shutdown()


def test_serve_waits_for_the_plugin_and_refuses_one_that_did_not_install(fake_mme) -> None:
    port, state = fake_mme
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        state.update(guarded_workload_manager=True, install_failed=False)
        mms_front.await_plugin(port, alive, timeout=5)  # installed: returns
        state.update(guarded_workload_manager=False, install_failed=True)
        with pytest.raises(RuntimeError, match="the MMS plugin did not install"):
            mms_front.await_plugin(port, alive, timeout=5)
        state.update(guarded_workload_manager=False, install_failed=False)  # never says: times out
        with pytest.raises(RuntimeError, match="the MMS plugin did not install"):
            mms_front.await_plugin(port, alive, timeout=0.5)
    finally:
        alive.kill()
        alive.wait()
