"""Processes a model's code starts end with the model (issue 14 item 10), on a real `container/serve`.

Before, a `sleep 1000` started by model_fn or predict_fn outlived the DELETE of its model and the SIGTERM of
`serve` (outside Docker nothing ends them). Now each worker is a subreaper of its own process group: a
child, and a grandchild that double-forked into a session of its own, are ended before the worker is gone;
`serve`, a subreaper too, ends whatever is left below it when it stops.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from sklearn_mme.container import examples
from tests.support import Serve, model_with_code, running_pids, running_serve

pytestmark = pytest.mark.mms

ROW = "5.1,3.5,1.4,0.2"
CODE = """
import os
import signal
import subprocess
from pathlib import Path

import joblib

LOG = Path(__file__).resolve().parent.parent / "spawned"


def _note(kind, pid):
    with open(LOG, "a") as f:
        f.write(f"{kind} {pid}\\n")


def _daemon():
    # The classic daemon: fork, setsid (a session and process group of its own), fork again, exit.
    r, w = os.pipe()
    middle = os.fork()
    if middle == 0:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            os.execvp("sleep", ["sleep", "1000"])
        os.write(w, str(pid).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(middle, 0)
    _note("daemon", int(os.read(r, 32)))
    os.close(r)


def model_fn(model_dir):
    _note("child", subprocess.Popen(["sleep", "1000"]).pid)
    _daemon()
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    _note("child", subprocess.Popen(["sleep", "1000"]).pid)
    _daemon()
    return {"worker": os.getpid(), "predictions": model.predict(data).tolist()}
"""


def _spawner(root: Path, trained: dict, name: str) -> Path:
    return model_with_code(examples.write_model_dir(trained["iris_logreg"], root, name), CODE)


def _spawned(model_dir: Path) -> dict[int, str]:
    return {int(pid): kind for kind, pid in
            (line.split() for line in (model_dir / "spawned").read_text().splitlines())}


def _load_and_invoke(serve: Serve, model_dir: Path) -> int:
    assert serve.load(model_dir.name, model_dir).status_code == 200
    resp = serve.invoke(model_dir.name, ROW)
    assert resp.status_code == 200, resp.text
    return resp.json()["worker"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["zygote", "hosts"])
def test_delete_ends_what_the_model_started(tmp_path: Path, trained: dict, backend: str) -> None:
    """zygote: the model's own worker ends what it started before it is gone. hosts: the host (which stays,
    serving its other models) ends what the deleted model started before it drops the model's ledger line."""
    spawner = _spawner(tmp_path / "models", trained, "spawner")
    other = _spawner(tmp_path / "models", trained, "other")
    # hosts: one host, so the other model shares it with the deleted one
    with running_serve(tmp_path, MME_BACKEND=backend, MME_HOSTS="1") as serve:
        worker = _load_and_invoke(serve, spawner)
        other_worker = _load_and_invoke(serve, other)
        assert (worker == other_worker) == (backend == "hosts")
        spawned, others = _spawned(spawner), _spawned(other)
        assert sorted(spawned.values()) == ["child", "child", "daemon", "daemon"], spawned
        assert running_pids(spawned) == list(spawned) and running_pids(others) == list(others)
        # The daemons left the worker's process group and session, but stayed below the worker.
        daemons = [pid for pid, kind in spawned.items() if kind == "daemon"]
        assert all(psutil.Process(pid).ppid() == worker for pid in daemons)
        assert all(os.getsid(pid) not in (os.getsid(worker), worker) for pid in daemons)

        assert serve.unload("spawner").status_code == 200
        deadline = time.monotonic() + 10  # the model goes a moment after the DELETE's answer
        if backend == "zygote":
            while running_pids([worker]):
                assert time.monotonic() < deadline, "the model's worker outlived its DELETE"
                time.sleep(0.01)
        else:
            while "spawner" in serve.model_pids():
                assert time.monotonic() < deadline, "the host kept the deleted model"
                time.sleep(0.01)
        # At the moment the model is gone, so is everything it started; the other model's untouched.
        assert running_pids(spawned) == [], {pid: spawned[pid] for pid in running_pids(spawned)}
        assert running_pids(others) == list(others) and running_pids([other_worker]) == [other_worker]
        assert serve.invoke("other", ROW).status_code == 200


@pytest.mark.timeout(300)
def test_sigterm_of_serve_leaves_no_process(tmp_path: Path, trained: dict) -> None:
    spawner = _spawner(tmp_path / "models", trained, "spawner")
    with running_serve(tmp_path) as serve:
        _load_and_invoke(serve, spawner)
        spawned = _spawned(spawner)
        tree = [p.pid for p in psutil.Process(serve.proc.pid).children(recursive=True)]
        assert set(spawned) <= set(tree)
        assert serve.stop(timeout=30) == 0
        # At serve's exit, nothing it or its models started is left.
        assert running_pids(tree) == [], [(p, psutil.Process(p).cmdline()) for p in running_pids(tree)]


@pytest.mark.timeout(300)
def test_worker_killed_outright_takes_its_process_group(tmp_path: Path, trained: dict) -> None:
    """A SIGKILLed worker cannot end what its model started: the zygote, which adopts those processes,
    ends the ones in the worker's process group before it lets the worker go (ledger record removed)."""
    spawner = _spawner(tmp_path / "models", trained, "spawner")
    # A model's own worker: a killed host's models move to a fresh host (tests/integration/test_hosts.py),
    # and what they started is ended when `serve` stops (README, Known limits).
    with running_serve(tmp_path, MME_BACKEND="zygote") as serve:
        worker = _load_and_invoke(serve, spawner)
        spawned = _spawned(spawner)
        group = [pid for pid, kind in spawned.items() if kind == "child"]
        assert running_pids(group) == group
        os.kill(worker, signal.SIGKILL)
        record = serve.run_dir() / "ledger" / str(worker)
        deadline = time.monotonic() + 10
        while record.exists():
            assert time.monotonic() < deadline, "the zygote did not reap the killed worker"
            time.sleep(0.01)
        assert running_pids(group) == [], group
        left = running_pids(set(spawned) - set(group))  # double-forked into their own session: see README
        print(f"\n[model-processes] worker SIGKILLed: its group ended; {len(left)} setsid daemons left "
              "until the server stops")
        resp = serve.invoke("spawner", ROW)  # MMS restarts the worker
        assert resp.status_code in (200, 500), resp.text
