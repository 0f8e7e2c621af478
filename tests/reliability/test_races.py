"""Races between MMS's management calls and the zygote's event loop, on a real `container/serve` (issue 14).

A DELETE racing a load of the same name left the zygote with one poll batch holding both the launcher's EOF
(MMS killed it for the DELETE) and a connect to the model's socket: the EOF ended the model, then the stale
connect event crashed the zygote (`assert slot.listener is not None`), failing every load in flight. The race
is made deterministic here by stopping the zygote (SIGSTOP) while both events arrive.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    with running_serve(tmp_path_factory.mktemp("races")) as server:
        yield server


def zygote_pid(serve: Serve) -> int:
    for child in psutil.Process(serve.proc.pid).children(recursive=True):
        if "sklearn_mme.container.zygote" in " ".join(child.cmdline()):
            return child.pid
    raise AssertionError("no zygote under serve")


def model_socket(serve: Serve, name: str) -> str:
    """The Unix socket MMS connects to for `name`'s workers (from its launcher's arguments)."""
    for proc in psutil.Process(serve.proc.pid).children(recursive=True):
        try:
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if "--model-name" in argv and argv[argv.index("--model-name") + 1] == name and "--sock-name" in argv:
            return argv[argv.index("--sock-name") + 1]
    raise AssertionError(f"no launcher for {name}")


def test_launcher_eof_and_model_connect_in_one_poll_batch(
    serve: Serve, tmp_path: Path, trained: dict
) -> None:
    victim = examples.write_model_dir(trained["iris_logreg"], tmp_path, "victim")
    other = examples.write_model_dir(trained["diabetes_ridge"], tmp_path, "other")
    assert serve.load("victim", victim).status_code == 200
    assert serve.load("other", other).status_code == 200
    sock_path = model_socket(serve, "victim")
    zygote = zygote_pid(serve)

    os.kill(zygote, signal.SIGSTOP)
    try:
        # A connect to the model's socket waits in the zygote's poll; made before the DELETE, because MMS
        # removes the socket's path once the model's backend thread has ended (GuardedWorkLoadManager
        # restartsOnDeath lets that clean-up run).
        late = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        late.connect(sock_path)
        deleted = serve.unload("victim")  # MMS kills the launcher: its EOF waits in the same batch
    finally:
        os.kill(zygote, signal.SIGCONT)
    try:
        # A load needs the zygote: answered, the zygote has handled the batch above.
        reload = serve.load("victim", victim)
        row = ",".join(repr(float(v)) for v in trained["diabetes_ridge"].X[0])
        invoked = serve.invoke("other", row)
        assert deleted.status_code == 200, deleted.text
        assert reload.status_code == 200, reload.text
        assert invoked.status_code == 200, invoked.text
        assert zygote_pid(serve) == zygote, "the zygote was restarted"
        assert "restarting it" not in serve.log()
        assert "AssertionError" not in serve.log()
    finally:
        late.close()
        serve.unload("victim")
        serve.unload("other")
