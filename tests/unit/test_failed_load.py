"""The failed-load log line: `serve` writes it, `mme-local` reads the reason back for its error message."""

from __future__ import annotations

from pathlib import Path

import pytest
from sklearn_mme.container import failed_load
from sklearn_mme.harness import container


@pytest.mark.parametrize("name", ["plain", "it's", 'quo"te', "sp ace", "é"])
def test_reason_round_trips(name: str) -> None:
    line = "[serve] " + failed_load.format_line(name, 400, "sha256 mismatch for model.joblib:\n expected abc")
    assert failed_load.find_reason(f"noise\n{line}\nmore noise\n", name) == (
        "sha256 mismatch for model.joblib: expected abc"
    )


def test_the_last_failure_of_that_model_only() -> None:
    failures = [("a", 400, "first"), ("ab", 400, "other model"), ("a", 507, "second"), ("b", 400, "x")]
    log = "\n".join("[serve] " + failed_load.format_line(n, s, r) for n, s, r in failures)
    assert failed_load.find_reason(log, "a") == "second"
    assert failed_load.find_reason(log, "c") is None
    assert failed_load.find_reason("[serve] model 'a' failed to load (400", "a") is None


def test_runtime_reads_only_what_was_logged_since_the_load_began(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(container, "LOAD_FAILURE_WAIT_S", 0.0)
    runtime = container._Subprocess()
    runtime.log_path = tmp_path / "container.log"
    runtime.log_path.write_text("[serve] " + failed_load.format_line("m", 400, "an old failure") + "\n")
    since = runtime.log_offset()
    assert runtime.load_failure("m", since) is None  # the old line is not this load's reason
    with open(runtime.log_path, "a") as f:
        f.write("[serve] " + failed_load.format_line("m", 400, "this failure") + "\n")
    assert runtime.load_failure("m", since) == "this failure"
    assert runtime.load_failure("m", 0) == "this failure"
    assert container.ExternalRuntime("http://x").load_failure("m", 0) is None
