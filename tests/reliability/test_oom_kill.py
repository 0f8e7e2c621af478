"""A worker killed by the kernel's OOM killer mid-request: that request gets 507, and the model recovers.

The real OOM killer, not a simulation: the zygote and its workers are moved into a child memory cgroup
with a 512 MB limit, and a model's predict_fn allocates 4 GB on demand. The kernel kills the worker;
the zygote, which holds a copy of the worker's MMS connection, sees an OOM kill counted while the worker
had a request in hand, answers that request 507 and starts a replacement on the same connection. A
request queued behind the fatal one is then answered by the replacement, and the other model's worker
never notices.
"""

from __future__ import annotations

import os
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

LIMIT = 512 << 20
ROW = "5.1,3.5,1.4,0.2"
HOG_CODE = textwrap.dedent("""
    import numpy as np

    def predict_fn(data, model):
        if data[0][0] > 1e6:
            hog = np.ones(4 << 27)  # 4 GB, every page written: far beyond the cgroup's limit
            return [float(hog.sum())]
        return model.predict(data)
""")


def _own_cgroup() -> tuple[Path, str] | None:
    """This process's memory cgroup directory and its version ("v1" or "v2"), if there is one."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        if "memory" in controllers.split(","):
            return Path("/sys/fs/cgroup/memory") / rel.lstrip("/"), "v1"
        if controllers == "" and (Path("/sys/fs/cgroup") / "cgroup.controllers").exists():
            return Path("/sys/fs/cgroup") / rel.lstrip("/"), "v2"
    return None


@pytest.fixture
def memory_cgroup() -> Iterator[tuple[Path, str]]:
    """A fresh child memory cgroup limited to LIMIT bytes, removed afterwards."""
    found = _own_cgroup()
    if found is None:
        pytest.skip("no memory cgroup on this machine: the OOM killer cannot be confined to a test")
    parent, version = found
    child = parent / f"mme-oom-test-{os.getpid()}"
    try:
        child.mkdir()
        limit_file = "memory.limit_in_bytes" if version == "v1" else "memory.max"
        (child / limit_file).write_text(str(LIMIT))
        swap_file = child / ("memory.memsw.limit_in_bytes" if version == "v1" else "memory.swap.max")
        if swap_file.exists():
            swap_file.write_text(str(LIMIT) if version == "v1" else "0")  # no escape into swap
        elif _swap_total() > 0:
            child.rmdir()
            pytest.skip("swap is on and this cgroup cannot limit it: the allocation would swap, not OOM")
    except OSError as exc:
        if child.exists():
            child.rmdir()
        pytest.skip(f"cannot create a limited memory cgroup under {parent} (needs root and a writable "
                    f"cgroup fs): {exc}")
    try:
        yield child, version
    finally:
        deadline = time.monotonic() + 30
        while child.exists():
            try:
                child.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)  # tasks still exiting


def _swap_total() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("SwapTotal:"):
            return int(line.split()[1])
    return 0


def _move(pids: list[int], cgroup: Path) -> None:
    try:
        for pid in pids:
            (cgroup / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        pytest.skip(f"cannot move processes into {cgroup}: {exc}")


def _oom_kills(cgroup: Path, version: str) -> int:
    name = "memory.oom_control" if version == "v1" else "memory.events"
    for line in (cgroup / name).read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise AssertionError(f"no oom_kill counter in {cgroup / name}")


def _zygote_tree(serve: Serve) -> list[int]:
    server = psutil.Process(serve.proc.pid)
    for proc in server.children(recursive=True):
        if "sklearn_mme.container.zygote" in " ".join(proc.cmdline()):
            return [proc.pid] + [p.pid for p in proc.children(recursive=True)]
    raise AssertionError("no zygote under serve")


def test_oom_killed_worker_answers_507_and_recovers(tmp_path: Path, trained: dict,
                                                    memory_cgroup: tuple[Path, str]) -> None:
    cgroup, version = memory_cgroup
    hog = examples.write_model_dir(trained["iris_logreg"], tmp_path, "hog")
    (hog / "code").mkdir()
    (hog / "code" / "inference.py").write_text(HOG_CODE)
    steady = examples.write_model_dir(trained["iris_logreg"], tmp_path, "steady")
    expected = trained["iris_logreg"].model.predict([[5.1, 3.5, 1.4, 0.2]]).tolist()

    # A model's own worker (MME_BACKEND=zygote): with hosts the OOM killer takes a host, which
    # tests/integration/test_hosts.py covers as a host's SIGKILL.
    with running_serve(tmp_path, MME_WORKER_MEMORY_LIMIT="", MME_BACKEND="zygote") as serve:
        assert serve.load("hog", hog).status_code == 200
        assert serve.load("steady", steady).status_code == 200
        assert serve.invoke("hog", ROW).status_code == 200
        before = serve.model_pids()
        # Only the zygote's tree is confined: Java and serve stay outside the limit, as the container's
        # biggest processes would be on a real host.
        _move(_zygote_tree(serve), cgroup)
        kills_before = _oom_kills(cgroup, version)

        answers: dict[str, object] = {}
        fatal = threading.Thread(target=lambda: answers.update(fatal=serve.invoke("hog", "1e9,1,1,1")))
        fatal.start()
        time.sleep(0.05)
        queued = serve.invoke("hog", ROW)  # waits in MMS's queue behind the fatal request
        fatal.join(60)

        resp = answers["fatal"]
        assert resp.status_code == 507, resp.text
        assert "out-of-memory" in resp.json()["message"], resp.text
        assert "Traceback" not in resp.text
        assert _oom_kills(cgroup, version) == kills_before + 1  # the kernel's OOM killer did it
        assert queued.status_code == 200, queued.text
        assert queued.json()["predictions"] == expected

        after = serve.model_pids()
        assert after["hog"] != before["hog"]  # a replacement worker serves the model now
        assert after["steady"] == before["steady"]  # the other model's worker never noticed
        for _ in range(5):
            for name in ("hog", "steady"):
                resp = serve.invoke(name, ROW)
                assert resp.status_code == 200 and resp.json()["predictions"] == expected, resp.text
        assert "killed by the OOM killer mid-request" in serve.log()
        for pid in _zygote_tree(serve):  # out again, so the cgroup can be removed after the stop
            (cgroup.parent / "cgroup.procs").write_text(str(pid))
