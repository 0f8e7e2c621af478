"""The trace / replay / size / serve --instances commands: bad input is one line before any container starts;
`serve --instances 2` serves through the console script with per-instance metrics."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from sklearn_mme.harness.metrics import parse_exposition, sample_sum
from tests.harness.conftest import cli
from tests.harness.endpoint_support import BODY, answer_of, key, numbered_store
from tests.harness_process import start_harness, stop_harness


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["replay", "{bad}", "--model-store", "{store}", "--body", "1"], "bad.csv:3: timestamp 'later'"),
        (["replay", "{untimed}", "--model-store", "{store}", "--body", "1"], "no timestamps; give its rate"),
        (["replay", "{good}", "--model-store", "{store}"], "some requests have no body; give one"),
        (["size", "{good}", "--model-store", "{store}", "--body", "1", "--instance-types",
          "ml.m5.large,ml.q1"], "unknown instance type ml.q1"),
        (["serve", "--model-store", "{store}", "--instances", "2", "--runtime", "external", "--container-url",
          "http://127.0.0.1:9"], "--instances needs containers the harness starts"),
        (["trace", "-o", "{out}", "--key-template", "same.tar.gz"], "gives the same key to different models"),
    ],
)
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "bad.csv").write_text("timestamp,TargetModel\n1,a.tar.gz\nlater,b.tar.gz\n")
    (tmp_path / "untimed.csv").write_text("TargetModel\na.tar.gz\n")
    (tmp_path / "good.csv").write_text("timestamp,TargetModel\n1,a.tar.gz\n")
    paths = {name: str(tmp_path / f"{name}.csv") for name in ("bad", "untimed", "good", "out")}
    argv = [a.format(store=tmp_path / "store", **paths) for a in args]
    done = cli(*argv, check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.mms
def test_serve_instances_through_the_console_script(tmp_path: Path) -> None:
    store = numbered_store(tmp_path, 4)
    h = start_harness(tmp_path, store, "--instances", "2")
    try:
        session = requests.Session()
        answered = {}
        for i in range(4):
            resp = h.invoke(session, key(i), BODY)
            assert resp.status_code == 200 and answer_of(resp.content) == i
            answered[i] = resp.headers["X-Mme-Instance"]
        assert sorted(answered.values()) == ["0", "0", "1", "1"]
        samples = parse_exposition(session.get(h.url + "/metrics", timeout=10).text)
        assert sample_sum(samples, "mme_loaded_model_count", instance="0") == 2
        assert sample_sum(samples, "mme_loaded_model_count", instance="all") == 4
        state = h.info()["instances"]
        assert [len(s["loaded"]) for s in state] == [2, 2] and all(s["in_service"] for s in state)
    finally:
        assert stop_harness(h) == 0
