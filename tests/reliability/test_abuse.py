"""Hostile management input and launcher abuse on a real `container/serve` (issue 14).

- A model name starting with '-' hung the load 60 s then 500, while the launcher re-registered with no
  back-off and it and the zygote spun writing logs: now 400 at once, and a
  launcher backs off on repeated refusals.
- A model name over ~4 KB loaded but could never be invoked or deleted (Netty's request-line limit): names MMS
  cannot address afterwards are refused at load.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from sklearn_mme.container import examples
from tests.support import REPO, Serve, running_serve

pytestmark = pytest.mark.mms


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with running_serve(tmp_path_factory.mktemp("abuse")) as server:
        yield server


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, trained: dict) -> Path:
    return examples.write_model_dir(trained["iris_logreg"], tmp_path_factory.mktemp("abuse-models"), "iris")


ROW = b"5.1,3.5,1.4,0.2"


def one_line_error(resp: requests.Response) -> str:
    message = resp.json()["message"]
    assert "\n" not in message and "Exception:" not in message and "java." not in message, message
    return message


def test_name_starting_with_dash_is_refused_at_once(serve: Serve, model_dir: Path) -> None:
    t0 = time.monotonic()
    resp = serve.load("-dash", model_dir, timeout=90)
    took = time.monotonic() - t0
    assert resp.status_code == 400, (resp.status_code, resp.text)
    assert "'-'" in one_line_error(resp)
    assert took < 5, took
    assert serve.http.get(f"{serve.url}/models/-dash", timeout=10).status_code == 404


@pytest.mark.parametrize("name", ["a" * 5000, "\u00e9" * 513])
def test_name_too_long_to_address_is_refused(serve: Serve, model_dir: Path, name: str) -> None:
    resp = serve.load(name, model_dir)
    assert resp.status_code == 400, (resp.status_code, resp.text[:200])
    assert "bytes long" in one_line_error(resp)
    assert serve.http.get(f"{serve.url}/models", timeout=10).json()["models"] == []


def test_longest_name_allowed_can_be_invoked_and_deleted(serve: Serve, model_dir: Path) -> None:
    name = "\u00e9" * 512  # 1,024 bytes, 3,072 characters once percent-encoded
    quoted = urllib.parse.quote(name, safe="")
    assert serve.load(name, model_dir).status_code == 200
    invoked = serve.invoke(quoted, ROW)
    deleted = serve.unload(quoted)
    assert invoked.status_code == 200, invoked.text
    assert deleted.status_code == 200, deleted.text


# ---- the launcher: back-off when its registration is dropped again and again -----------------------------


class DroppingZygote:
    """A Unix socket that accepts launchers and closes each connection at once, counting them."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self.accepted = 0
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            conn.close()


def _launchers(tmp_path: Path) -> dict[str, tuple[list[str], dict[str, str]]]:
    sock = tmp_path / "zygote.sock"
    native = tmp_path / "mme-launcher"
    shutil.copy(REPO / "container" / "lib" / "mme-launcher", native)
    (tmp_path / "mme-launcher.conf").write_text(f"{sys.executable}\n{sock}\n")
    worker = ["/x/model_service_worker.py", "--sock-type", "unix", "--sock-name", str(tmp_path / "m.sock")]
    return {
        "c": ([str(native), *worker], {}),
        "python": ([sys.executable, "-IS", str(REPO / "container" / "launcher.py"), *worker],
                   {"_MME_ZYGOTE_SOCKET": str(sock)}),
    }


@pytest.mark.parametrize("kind", ["c", "python"])
def test_launcher_backs_off_when_dropped(tmp_path: Path, kind: str) -> None:
    argv, env = _launchers(tmp_path)[kind]
    zygote = DroppingZygote(tmp_path / "zygote.sock")
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.0)
        registrations = zygote.accepted
    finally:
        proc.kill()
        proc.wait()
        zygote.sock.close()
    # 50 ms doubling: 0, 0.05, 0.15, 0.35, 0.75, 1.55, 3.15 s -> 6 or 7 in 3 s (with no back-off: thousands).
    assert 2 <= registrations <= 8, registrations


def test_zygote_refusal_ends_the_launcher(serve: Serve, tmp_path: Path) -> None:
    """Arguments MMS's worker parser refuses end the launcher (exit 2) instead of a re-registration loop."""
    launcher = serve.run_dir() / "python-launcher"
    t0 = time.monotonic()
    done = subprocess.run([str(launcher), "/x/model_service_worker.py", "--no-such-option"],
                          capture_output=True, timeout=30)
    assert done.returncode == 2, (done.returncode, done.stderr[-300:])
    assert time.monotonic() - t0 < 5
    assert b"refused" in done.stderr


# ---- management API input that MMS answered 500, 200 or with a download (RequestGuard.java) -------------


@pytest.mark.parametrize(
    "body, words",
    [
        ('{"model_name": "x", "url": ', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"model_name": "neg", "url": "DIR", "response_timeout": -1}', "response_timeout"),
        ('{"model_name": "h", "url": "DIR", "handler": "foo:bar"}', "handler"),
        ('{"model_name": "zero", "url": "DIR", "initial_workers": 0}', "initial_workers"),
        ('{"model_name": "web", "url": "http://127.0.0.1:9/x.mar"}', "local directory"),
        ('{"model_name": "file", "url": "DIR/model.joblib"}', "local directory"),
    ],
)
def test_bad_register_requests_get_400(serve: Serve, model_dir: Path, body: str, words: str) -> None:
    resp = serve.http.post(f"{serve.url}/models", data=body.replace("DIR", str(model_dir)),
                           headers={"Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 400, (resp.status_code, resp.text)
    assert words in one_line_error(resp)
    assert serve.http.get(f"{serve.url}/models", timeout=10).json()["models"] == []


def test_unknown_method_is_not_answered_200(serve: Serve) -> None:
    resp = serve.http.request("FOO", f"{serve.url}/ping", timeout=10)
    assert resp.status_code == 405, (resp.status_code, resp.text)
    assert "FOO" in one_line_error(resp)
    assert serve.http.get(f"{serve.url}/ping", timeout=10).status_code == 200  # same connection still good
