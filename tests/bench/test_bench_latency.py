"""`python -m bench --latency` end to end, quick: the stage breakdown adds up, every peer row is there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import breakdown, latency

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.mms
def test_latency_mode_breaks_a_request_down_and_compares_peers(tmp_path: Path) -> None:
    out = tmp_path / "latency.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--latency", "--quick", "--invokes", "200", "--json", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    result = json.loads(out.read_text())
    assert result["mode"] == "latency"
    (stages,) = result["breakdown"]
    assert stages["requests"] >= 180  # nearly every request matched its worker's and the Java front's lines
    spans = stages["stages_us"]
    assert set(spans) == {label for label, _, _ in breakdown.JAVA_ROWS}
    # Not the span from the worker's "sent": a worker can lose the CPU right after its write, and Java then
    # reads the answer before the worker notes that it sent it (the median of a short span can go negative).
    assert all(v > 0 for label, v in spans.items() if not label.startswith("worker -> ")), spans
    # Medians of the parts need not add up exactly to the median whole, but near it.
    assert 0.6 * stages["total_us"] < sum(spans.values()) < 1.4 * stages["total_us"]
    assert 0 < stages["ping_us"] < stages["total_us"]
    assert all(v > 0 for v in stages["handler_us"].values())
    for server in ("ours", "vanilla"):  # --quick: ours and vanilla
        median = result["servers"][server]["median"]
        for key, _, _, _ in latency.ROWS:
            if "policy" in key and server != "ours":
                assert key not in median  # the worker-count policy is ours alone
                continue
            assert median[key] > 0, (server, key)
            assert median.get(key + "_errors", 0) == 0, (server, key)
    assert "req/s, 32 clients, one model, W=2" in proc.stdout
    ours = result["servers"]["ours"]["median"]
    # 8 clients on one model: the policy gave it a second worker (its ceiling is one per core).
    assert ours["hot_workers_policy_on"] == min(2, len(os.sched_getaffinity(0)))
