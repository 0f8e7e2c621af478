"""Out of file descriptors, a load answers 507 at once and nothing loaded is lost (real `container/serve`).

Before, the zygote held six descriptors per model and MMS's JVM four: at this VM's nofile 20,000 the 3,332nd
load met a zygote that could not accept its launcher, waited out MMS's 60 s start-up timeout and got 500.
Now the zygote holds three per hosted model (the launcher keeps the model's stdio), the JVM three (it closes
each backend's stdin), and a load that would leave the JVM under its reserve is refused with 507, unregistered
before the answer, so SageMaker's unload-and-retry works. Here serve runs under nofile 400 (as `prlimit`):
room for a few dozen models.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sklearn_mme.container import examples, launcher_wire
from tests.support import REPO, running_serve

pytestmark = pytest.mark.mms

NOFILE = 400
MAX_MODELS = 200  # far past what NOFILE leaves room for: the loop below must meet the refusal first


def _fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@pytest.mark.timeout(600)
def test_load_past_the_descriptors_answers_507_at_once(tmp_path: Path, trained: dict) -> None:
    example = trained["iris_logreg"]
    rows = example.X[:3]
    body = "\n".join(",".join(str(v) for v in row) for row in rows)
    expected = example.model.predict(rows).tolist()
    with running_serve(tmp_path, nofile=NOFILE) as serve:
        loaded: list[str] = []
        refused = None
        for i in range(MAX_MODELS):
            name = f"m{i:03d}"
            path = examples.write_model_dir(example, tmp_path / "models", name)
            t0 = time.monotonic()
            resp = serve.load(name, path)
            elapsed = time.monotonic() - t0
            if resp.status_code != 200:
                refused = (name, path, resp, elapsed)
                # At the moment of the answer the name is free: SageMaker's retry must not meet 409.
                assert serve.http.get(f"{serve.url}/models/{name}", timeout=10).status_code == 404
                break
            loaded.append(name)
        assert refused is not None, f"{MAX_MODELS} models loaded under nofile {NOFILE}"
        name, path, resp, elapsed = refused
        assert resp.status_code == 507, (resp.status_code, resp.text)
        assert "descriptors" in resp.json()["message"], resp.text
        assert elapsed < 5, f"the refusal took {elapsed:.1f} s"  # not MMS's 60 s start-up timeout
        assert len(loaded) >= 20, loaded  # three per model: a few dozen fit in what the reserve leaves
        status = serve.http.get(f"{serve.url}/mme", timeout=10).json()
        assert status["loads_refused_for_descriptors"] >= 1, status
        assert status["backend_stdins_closed"] >= len(loaded), status

        for other in loaded:  # nothing loaded is lost
            answer = serve.invoke(other, body)
            assert answer.status_code == 200, (other, answer.status_code, answer.text)
            assert np.asarray(answer.json()["predictions"]).tolist() == expected

        # SageMaker's loop: unload some, retry the same load.
        for other in loaded[:10]:
            assert serve.unload(other).status_code == 200
        retry = serve.load(name, path)
        assert retry.status_code == 200, (retry.status_code, retry.text)
        answer = serve.invoke(name, body)
        assert answer.status_code == 200 and answer.json()["predictions"] == expected, answer.text


def _launcher(tmp_path: Path, kind: str) -> tuple[list[str], dict[str, str]]:
    """A launcher (`c` or `python`) registering a model with the zygote socket at tmp_path/zygote.sock."""
    sock = tmp_path / "zygote.sock"
    worker = ["/x/model_service_worker.py", "--sock-type", "unix", "--sock-name", str(tmp_path / "m.sock")]
    if kind == "python":
        return [sys.executable, "-IS", str(REPO / "container" / "launcher.py"), *worker], \
            {"_MME_ZYGOTE_SOCKET": str(sock)}
    native = tmp_path / "mme-launcher"
    shutil.copy(REPO / "container" / "lib" / "mme-launcher", native)
    (tmp_path / "mme-launcher.conf").write_text(f"{sys.executable}\n{sock}\n")
    return [str(native), *worker], {}


@pytest.mark.parametrize("kind", ["c", "python"])
def test_launcher_gives_the_models_stdio_back(tmp_path: Path, kind: str) -> None:
    """The zygote lets a model's stdio go after registration and asks its launcher again (`F`): what it gets
    back are the launcher's own stdout and stderr, still open though the zygote closed its first copies."""
    argv, env = _launcher(tmp_path, kind)
    zygote = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    zygote.bind(str(tmp_path / "zygote.sock"))
    zygote.listen(1)
    zygote.settimeout(30)
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    proc = subprocess.Popen(argv, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out_w,
                            stderr=err_w)
    os.close(out_w)
    os.close(err_w)
    try:
        conn, _ = zygote.accept()
        request, first = launcher_wire.read_registration(conn)
        assert request["argv"][0] == "/x/model_service_worker.py"
        if kind == "c":  # it bound the model's socket (sent fourth) and tells MMS the model started itself
            assert request["announced"] is True and len(first) == 4
            listener = socket.socket(fileno=first.pop())
            assert listener.getsockname() == str(tmp_path / "m.sock")
            listener.close()
            assert os.read(out_r, 100) == b"[PID] %d\nMMS worker started.\n" % proc.pid
        launcher_wire.close_fds(first)  # as the zygote does once the model's first connection is served
        for _ in range(2):  # asked again and again: the same stdio each time
            fds, other = launcher_wire.ask_stdio(conn)
            assert other == b""
            os.write(fds[1], b"to stdout\n")
            os.write(fds[2], b"to stderr\n")
            launcher_wire.close_fds(fds)
            assert os.read(out_r, 100) == b"to stdout\n"
            assert os.read(err_r, 100) == b"to stderr\n"
        conn.sendall(launcher_wire.exit_message(0))
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        zygote.close()
        os.close(out_r)
        os.close(err_r)
