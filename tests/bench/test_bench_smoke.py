"""The benchmark end to end in --quick mode: both servers, every metric, right answers, nothing left over."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads(out.read_text()), proc.stdout


@pytest.mark.mms
def test_every_metric_for_both_servers(quick_run: tuple[dict, str]) -> None:
    result, _ = quick_run
    assert result["mode"] == "compare" and result["n_models"] == 3
    for server in ("ours", "vanilla"):
        median = result["servers"][server]["median"]
        for key in report.METRIC_KEYS:
            value = median[key]
            assert math.isfinite(value), (server, key, value)
            if key != "unload_vs_idle_pct":  # a difference: may be either sign
                assert value > 0, (server, key, value)
        # PSS of a whole MMS tree is tens of MB at least, and a loaded model costs something.
        assert median["idle_pss_mb"] > 20 and median["loaded_pss_mb"] > median["idle_pss_mb"]
        assert median["cold_load_p95_ms"] >= median["cold_load_p50_ms"]
        assert median["warm_p99_ms"] >= median["warm_p50_ms"]


@pytest.mark.mms
def test_answers_were_right_and_nothing_was_left_running(quick_run: tuple[dict, str]) -> None:
    result, _ = quick_run
    for server in ("ours", "vanilla"):
        entry = result["servers"][server]
        assert entry["verified"] is True
        for run in entry["repeats"]:
            errors = run["errors"]
            assert errors["wrong_answers"] == errors["interleaved_wrong_answers"] == 0
            assert errors["invoke_errors"] == errors["interleaved_invoke_errors"] == 0
            assert errors["throughput_ok"] > 0 and errors["interleaved_ok"] > 0
            assert run["timing_mode"] == "interleaved"
            assert run["leftover_processes"] == []
        # Each loaded model has its own worker process; the reference really runs a fresh python per model.
        roles = entry["breakdown_per_model"]
        assert roles.get("worker", {}).get("procs_per_model", 0) >= 1, roles
        if server == "vanilla":
            assert roles.get("backend", {}).get("procs_per_model", 0) >= 1, roles


@pytest.mark.mms
def test_table_shows_every_metric_ratios_and_targets(quick_run: tuple[dict, str]) -> None:
    result, stdout = quick_run
    header = stdout.splitlines()[stdout.splitlines().index("") + 1]
    for column in ("metric", "ours", "vanilla", "ratio", "target (ours)", "result"):
        assert column in header
    for metric in report.METRICS:
        assert metric.label in stdout
        if metric.kind != "info":
            assert result["ratios"][metric.key] > 0
    assert {t.metric for t in report.TARGETS} == set(result["targets"])
    assert all(t["pass"] in (True, False) for t in result["targets"].values())
    assert stdout.count("PASS") + stdout.count("FAIL") == len(report.TARGETS)


@pytest.mark.mms
def test_slow_neighbour_mode_measures_both_settings(tmp_path: Path) -> None:
    out = tmp_path / "slow.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--slow-neighbour", "--models", "3", "--invokes", "60",
         "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    never, default = result["metrics"]["never"], result["metrics"]["default"]
    assert result["mode"] == "slow-neighbour"
    assert never["slow_model_answers"] > 0 and default["slow_model_answers"] > 5
    # Behind a 50 ms predict in the same host, against beside it in a process of its own.
    assert never["busy_p50_ms"] > default["busy_p50_ms"]
    assert "slow model busy" in proc.stdout


@pytest.mark.mms
def test_reload_mode_measures_evicted_and_cached_invokes(tmp_path: Path) -> None:
    out = tmp_path / "reload.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--reload", "--models", "8", "--invokes", "80", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    metrics = result["metrics"]
    assert result["mode"] == "reload" and metrics["models"] == 8
    # Every request of the round-robin reloaded its model: slower than a cached one, each answer checked.
    assert metrics["miss_p50_ms"] > metrics["hit_p50_ms"] > 0
    assert "reload p50" in proc.stdout
