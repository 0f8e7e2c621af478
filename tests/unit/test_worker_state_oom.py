"""The zygote's bookkeeping for OOM kills: the shared worker state and the kernel's OOM-kill counters."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sklearn_mme.container import oom
from sklearn_mme.container.worker_state import WorkerState


def test_worker_state_is_shared_across_fork() -> None:
    state = WorkerState()
    message = {"modelName": bytearray(b"m\xff"), "modelPath": b"/opt/ml/models/m", "batchSize": 1,
               "handler": b"sklearn_mme.container.mms_entry:handle", "ioFileDescriptor": b"abc"}
    assert state.load_message() is None and not state.was_busy()
    pid = os.fork()
    if pid == 0:  # the worker's side writes; the parent must see it
        state.loaded(message)
        state.busy(True)
        os._exit(0)
    os.waitpid(pid, 0)
    assert state.was_busy()
    got = state.load_message()
    assert got == {k: bytes(v) if isinstance(v, bytes | bytearray) else v for k, v in message.items()}
    state.busy(False)
    assert not state.was_busy()


def test_a_load_message_too_long_is_not_kept() -> None:
    state = WorkerState()
    state.loaded({"modelPath": b"x" * (1 << 20)})
    assert state.load_message() is None


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_oom_kill_count_reads_the_cgroup_counters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                  version: str) -> None:
    monkeypatch.setattr(oom, "CGROUP_ROOT", tmp_path)
    proc_cgroup = tmp_path / "self-cgroup"
    if version == "v1":
        proc_cgroup.write_text("5:cpu:/\n4:memory:/pod/c1\n")
        counter = tmp_path / "memory" / "pod" / "c1" / "memory.oom_control"
        text = "oom_kill_disable 0\nunder_oom 0\noom_kill {}\n"
    else:
        proc_cgroup.write_text("0::/pod/c1\n")
        counter = tmp_path / "pod" / "c1" / "memory.events"
        text = "low 0\nhigh 0\nmax 3\noom 2\noom_kill {}\n"
    counter.parent.mkdir(parents=True)
    assert counter in oom._cgroup_files(str(proc_cgroup))
    counter.write_text(text.format(2))
    assert oom._counter(counter, "oom_kill") == 2
    counter.write_text(text.format(7))
    assert oom._counter(counter, "oom_kill") == 7

