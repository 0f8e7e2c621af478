"""The warm path through real MMS (issue 19): no log line per request, and the stage log the bench's
breakdown reads (MME_STAGE_LOG), one line per invoke from the worker that answered it; and the steps of a
cold load that `bench --load-breakdown` reads from the same file (issue 13)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from bench.load_breakdown import STEPS, read_marks
from tests.support import running_serve

INVOKES = 20


@pytest.mark.parametrize("backend", ["zygote", "vanilla"])
def test_invokes_log_nothing_per_request_and_stage_lines_line_up(backend: str, model_root: Path,
                                                                  tmp_path: Path) -> None:
    stage_log = tmp_path / "stages.log"
    with running_serve(tmp_path, MME_BACKEND=backend, MME_STAGE_LOG=str(stage_log),
                       MME_LOG_LEVEL="info") as serve:
        assert serve.load("iris", model_root / "iris_logreg").status_code == 200
        pid = serve.model_pids()["iris"]
        lines_before = len(serve.log().splitlines())
        spans = []
        for _ in range(INVOKES):
            t0 = time.perf_counter_ns()
            answer = serve.invoke("iris", "5.1,3.5,1.4,0.2")
            spans.append((t0, time.perf_counter_ns()))
            assert answer.status_code == 200 and answer.json()["predictions"] == [0]
        # MMS logs asynchronously: give a per-request line time to appear. The worker writes its stage line
        # once the answer is sent (the line holds the send's stamp), so the last one may follow the client's
        # read of the answer.
        time.sleep(0.5)
        stages = [[int(v) for v in line.split()] for line in stage_log.read_text().splitlines()
                  if not line.startswith("load ")]  # the load's steps: test_load_steps_line_up
        added = serve.log().splitlines()[lines_before:]
    # Before: "Backend response time: N" at info from MMS's worker thread, one line per request.
    assert not [line for line in added if "Backend response time" in line], added[:3]
    assert len(added) < INVOKES // 2, added[:5]
    assert len(stages) == INVOKES
    for (t0, t1), (worker, *marks) in zip(spans, stages, strict=True):
        assert worker == pid
        # "sent" may follow the client's read: the worker can lose the CPU right after its write.
        assert t0 < marks[0] <= marks[1] <= marks[2] <= marks[3] <= marks[4]  # same clock as ours
        assert marks[3] < t1


@pytest.mark.parametrize("backend", ["hosts", "zygote"])
def test_load_steps_line_up(backend: str, model_root: Path, tmp_path: Path) -> None:
    """Our plugin, the zygote and (hosts) the host each stamp their steps of a load, in the order the load
    passes them, between the client's own stamps around the POST."""
    stage_log = tmp_path / "stages.log"
    with running_serve(tmp_path, MME_BACKEND=backend, MME_STAGE_LOG=str(stage_log)) as serve:
        deadline = time.monotonic() + 30
        while requests.get(f"{serve.url}/mme", timeout=10).json()["spare_launchers_ready"] < 1:
            assert time.monotonic() < deadline, "no spare launcher was started"
            time.sleep(0.02)
        t0 = time.perf_counter_ns()
        assert serve.load("iris", model_root / "iris_logreg").status_code == 200
        t1 = time.perf_counter_ns()
        marks = read_marks(stage_log)["iris"]
    # A spare launcher takes the model; the C launcher tells MMS it started itself (no zygote handshake).
    expected = {step for step, _ in STEPS[1:-1]} - {"z_handshake"}
    if backend == "zygote":  # no host: the zygote forks the model's own worker
        expected -= {"z_accepted", "z_handed", "h_frame", "h_load_in", "h_load_out", "h_sent"}
    assert set(marks) == expected
    # The zygote reads the registration beside the chain: after the spare was handed the model, before it
    # accepts MMS's connection to the model.
    stamps = [marks[step] for step, _ in STEPS if step in marks and step != "z_registered"]
    assert t0 < stamps[0] and stamps[-1] < t1
    assert stamps == sorted(stamps), marks
    assert marks["j_spare_handed"] < marks["z_registered"] < marks.get("z_accepted", t1), marks


def _answers(serve) -> list[tuple[int, bytes, dict[str, str]]]:
    """Invokes that succeed, one that fails (400) and a success after it, as the client sees them."""
    out = []
    for body in ["5.1,3.5,1.4,0.2", "6.7,3.0,5.2,2.3", "not,a,number", "5.1,3.5,1.4,0.2"]:
        r = serve.invoke("iris", body)
        headers = {k.lower(): v for k, v in r.headers.items() if k.lower() not in ("x-request-id", "date")}
        out.append((r.status_code, r.content, headers))
    return out


@pytest.mark.parametrize("backend", ["hosts", "zygote"])
def test_successful_invokes_are_answered_early_and_the_same(backend: str, model_root: Path,
                                                            tmp_path: Path) -> None:
    """EarlyAnswers.java: an invoke the worker answered (its reply frame says 200, also when it carries the
    handler's 400) is answered from the backend channel's event loop, counted in GET /mme; the client sees
    the same answers as through MMS's worker thread (the bench-only switch off)."""
    seen = {}
    for switch in ("on", "off"):
        env = {"_MME_EARLY_ANSWERS": "off"} if switch == "off" else {}
        (tmp_path / switch).mkdir()
        with running_serve(tmp_path / switch, MME_BACKEND=backend, **env) as serve:
            assert serve.load("iris", model_root / "iris_logreg").status_code == 200
            mme = f"{serve.url}/mme"
            before = serve.http.get(mme, timeout=10).json()["invokes_answered_early"]
            seen[switch] = _answers(serve) + _answers(serve)
            after = serve.http.get(mme, timeout=10).json()["invokes_answered_early"]
        assert after - before == (8 if switch == "on" else 0), (switch, before, after)
    assert [a[0] for a in seen["on"]] == [200, 200, 400, 200] * 2
    assert seen["on"] == seen["off"]
