"""Spare launchers (container/java SpareLaunchers, launcher.c "--spare"): a load takes a launcher started
before it, with the model's command; a spare that died does not fail a load; MME_SPARE_LAUNCHERS=0 is
MMS's own start. Real MMS, zygote and hosts."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest
import requests

from sklearn_mme.container import examples
from tests.support import Serve, running_pids, running_serve

pytestmark = pytest.mark.timeout(300)


def _java(serve: Serve) -> psutil.Process:
    return next(p for p in psutil.Process(serve.proc.pid).children() if "java" in p.name())


def _spares(serve: Serve, at_least: int = 0, timeout: float = 30) -> list[int]:
    """The launchers waiting for a model (argv[1] is --spare), once at least `at_least` are up."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for proc in _java(serve).children():
            try:
                argv = proc.cmdline()
            except psutil.Error:
                continue
            if len(argv) > 1 and argv[1] == "--spare" and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc.pid)
        if len(found) >= at_least or time.monotonic() > deadline:
            return found
        time.sleep(0.02)


def _launcher(serve: Serve, name: str) -> psutil.Process:
    for proc in _java(serve).children():
        try:
            argv = proc.cmdline()
        except psutil.Error:
            continue
        if "--model-name" in argv and argv[argv.index("--model-name") + 1] == name:
            return proc
    raise AssertionError(f"no launcher for {name}")


def _counters(serve: Serve) -> dict:
    return requests.get(f"{serve.url}/mme", timeout=10).json()


def _load_and_check(serve: Serve, example: examples.Example, tmp: Path, name: str) -> None:
    assert serve.load(name, examples.write_model_dir(example, tmp, name)).status_code == 200
    rows = example.X[:3]
    answer = serve.invoke(name, "\n".join(",".join(repr(float(v)) for v in row) for row in rows),
                          accept="application/json")
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"] == example.model.predict(rows).tolist()


def test_each_load_takes_a_spare_started_before_it(tmp_path: Path, trained: dict) -> None:
    with running_serve(tmp_path) as serve:
        assert _counters(serve)["spare_launchers"] == 2
        for i in range(3):
            waiting = _spares(serve, at_least=2)  # the pool is refilled after each load
            assert len(waiting) == 2, waiting
            name = f"model{i}"
            _load_and_check(serve, trained["iris_logreg"], tmp_path / "models", name)
            launcher = _launcher(serve, name)
            # The model's launcher is one of the spares that were waiting, and shows the model's command.
            assert launcher.pid in waiting
            argv = launcher.cmdline()
            assert argv[argv.index("--model-path") + 1] == str(tmp_path / "models" / name)
            assert _counters(serve)["loads_from_a_spare_launcher"] == i + 1
        # An unload ends the model's launcher before it answers, as for one MMS started; not the others'.
        gone, kept = _launcher(serve, "model0").pid, _launcher(serve, "model1").pid
        assert serve.unload("model0").status_code == 200
        assert running_pids([gone, kept]) == [kept]
        assert _counters(serve)["loads_without_a_spare_launcher"] == 0


def test_loads_leave_no_spare_behind_in_java(tmp_path: Path, trained: dict) -> None:
    """Java holds the spares waiting and the loaded models' launchers, nothing of those that served loads
    now unloaded: a start's 2-minute deadline, pending after the start was read, held the spare's Process
    and its two reader threads (SpareOutput) for 2 minutes after every load (~300 after 150 loads)."""
    jcmd = shutil.which("jcmd")
    assert jcmd, "jcmd comes with the JDK scripts/setup.sh installs"
    with running_serve(tmp_path) as serve:
        for i in range(10):
            _load_and_check(serve, trained["iris_logreg"], tmp_path / "models", f"m{i}")
            assert serve.unload(f"m{i}").status_code == 200
        # An unloaded model itself stays reachable for 5 s by design (LifecyclePlugin answers what still
        # lands in its queue, DRAIN_FOR_MS), its launcher and readers with it; the deadline held them 2 min.
        time.sleep(5.5)
        # GC.class_histogram collects first: what it counts is what is still reachable.
        histogram = subprocess.run([jcmd, str(_java(serve).pid), "GC.class_histogram"], capture_output=True,
                                   text=True, timeout=60, check=True).stdout
    readers = sum(int(line.split()[1]) for line in histogram.splitlines()
                  if line.strip().endswith(" com.mme.mms.SpareOutput"))
    # Two readers per spare: the 2 waiting, and one being started again after the last load.
    assert 0 < readers <= 2 * 3, readers


def test_spares_killed_while_waiting_do_not_fail_a_load(tmp_path: Path, trained: dict) -> None:
    with running_serve(tmp_path) as serve:
        killed = _spares(serve, at_least=2)
        for pid in killed:
            psutil.Process(pid).send_signal(signal.SIGKILL)
        # At once: Java may not have seen them die yet, and hands the model to a dead spare.
        _load_and_check(serve, trained["iris_logreg"], tmp_path / "models", "survivor")
        assert _launcher(serve, "survivor").pid not in killed
        counters = _counters(serve)
        assert counters["loads_from_a_spare_launcher"] == 0
        assert counters["loads_without_a_spare_launcher"] + counters["spare_launchers_that_failed"] >= 1


def test_with_no_spares_mms_starts_each_launcher(tmp_path: Path, trained: dict) -> None:
    with running_serve(tmp_path, MME_SPARE_LAUNCHERS="0") as serve:
        _load_and_check(serve, trained["iris_logreg"], tmp_path / "models", "plain")
        assert _spares(serve) == []
        counters = _counters(serve)
        assert counters["spare_launchers"] == 0
        assert counters["loads_from_a_spare_launcher"] == 0
        assert _launcher(serve, "plain").is_running()


@pytest.mark.parametrize("spares", ["2", "0"])
def test_a_killed_launcher_is_started_again(tmp_path: Path, trained: dict, spares: str) -> None:
    """A model whose launcher was SIGKILLed answers again once MMS's backend thread has started a new one
    (its back-off, 1 s) and the model's worker has reconnected: MMS 1.1.11's backend thread died in its own
    clean-up and never did, with or without spares (GuardedWorkLoadManager.restartsOnDeath)."""
    with running_serve(tmp_path, MME_SPARE_LAUNCHERS=spares) as serve:
        _spares(serve, at_least=int(spares))
        _load_and_check(serve, trained["iris_logreg"], tmp_path / "models", "phoenix")
        first = _launcher(serve, "phoenix")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        deadline = time.monotonic() + 60
        status, text = None, ""
        while status != 200:
            assert time.monotonic() < deadline, (status, text[:200])
            time.sleep(0.2)
            try:
                answer = requests.post(f"{serve.url}/models/phoenix/invoke", data="5.1,3.5,1.4,0.2",
                                       headers={"Content-Type": "text/csv"}, timeout=5)
                status, text = answer.status_code, answer.text
            except requests.Timeout:  # queued for the model while it has no worker
                status, text = None, "timed out"
        assert answer.json()["predictions"] == [0]
        assert _launcher(serve, "phoenix").pid != first.pid
        # And it unloads as any model does.
        assert serve.unload("phoenix").status_code == 200
        assert serve.invoke("phoenix", "5.1,3.5,1.4,0.2").status_code == 404


def test_a_model_unloaded_while_its_launcher_is_dead_is_not_started_again(
    tmp_path: Path, trained: dict
) -> None:
    """The backend thread's retry, scheduled when the launcher died, comes after the DELETE: it must not
    start a launcher for a model nobody has any more."""
    with running_serve(tmp_path) as serve:
        _spares(serve, at_least=2)
        _load_and_check(serve, trained["iris_logreg"], tmp_path / "models", "gone")
        first = _launcher(serve, "gone")
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        assert serve.unload("gone").status_code == 200
        time.sleep(3)  # past MMS's first back-off (1 s): the retry has run
        with pytest.raises(AssertionError, match="no launcher"):
            _launcher(serve, "gone")
        assert "is not registered" in serve.log()
