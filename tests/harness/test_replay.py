"""`mme-local trace` + `replay` against real containers: a 2,000-request Zipf trace over 50 models.

Two replays of the same trace (one in-process, one through the console script) give the same hit rate
within 2 points; the in-process one's counts equal the endpoint's /metrics read right after it; the chart
is a PNG that PIL and matplotlib read. The pace (40 requests/s: the trace's 20/s at 2x) and --hot-rate 50
(no model is hot at this pace) keep the hit rate a matter of the LRU, not of how busy the machine is.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import matplotlib.image
import pytest
import requests
from PIL import Image

from sklearn_mme.harness import replay_report
from sklearn_mme.harness.metrics import parse_exposition, sample_sum
from sklearn_mme.harness.replay import replay
from sklearn_mme.harness.trace import read_trace
from tests.harness.conftest import MME_LOCAL
from tests.harness.endpoint_support import BODY, numbered_store, running_endpoint

pytestmark = pytest.mark.mms

MODELS, REQUESTS, RATE, SPEED, MAX_MODELS, HOT_RATE = 50, 2000, 20, 2, 12, 50
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def cli(*args: str) -> subprocess.CompletedProcess:
    """The real console script (a replay of 2,000 requests takes about a minute)."""
    done = subprocess.run([MME_LOCAL, *args], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, f"mme-local {' '.join(args)} failed ({done.returncode}):\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("replay")
    store = numbered_store(root, MODELS)
    trace = root / "zipf.csv"
    done = cli("trace", "--pattern", "zipf", "--models", str(MODELS), "--requests", str(REQUESTS),
               "--rate", str(RATE), "--key-template", "m{i:03d}.tar.gz", "--seed", "7", "-o", str(trace))
    assert f"{REQUESTS} requests" in done.stdout
    return store, trace


def test_zipf_replay_is_repeatable_matches_metrics_and_draws_a_png(setup: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    store, trace_path = setup
    trace = read_trace(trace_path)
    with running_endpoint(store, 2, hot_rate=HOT_RATE, max_models=MAX_MODELS) as endpoint:
        report = replay_report.build(replay(endpoint.url, trace, speed=SPEED, body=BODY, progress=False))
        samples = parse_exposition(requests.get(endpoint.url + "/metrics", timeout=30).text)
    assert report.total.requests == REQUESTS and report.total.errors == 0
    assert len(report.models) == len({r.model for r in trace})
    # The client's counts (each answer's headers) are the endpoint's, instance by instance.
    assert set(report.instances) == {"0", "1"}
    for inst, row in report.instances.items():
        assert row.hits == sample_sum(samples, "mme_model_cache_hit_total", instance=inst)
        assert row.misses == sample_sum(samples, "mme_model_cache_miss_total", instance=inst)
        assert row.loads == sample_sum(samples, "mme_model_loading_seconds_count", instance=inst)
        assert row.evictions == sample_sum(samples, "mme_model_unload_total", instance=inst)
        # ... and what the container itself answered.
        assert row.requests == sample_sum(samples, "mme_container_invocations_total", instance=inst)
    assert report.total.hits == sample_sum(samples, "mme_model_cache_hit_total", instance="all")
    assert report.total.loads > 0 and report.total.evictions > 0  # 12 of 50 models fit per instance
    first = report.total.hit_rate
    assert first is not None and 0.3 < first < 0.98

    chart = tmp_path / "replay.png"
    done = cli("replay", str(trace_path), "--model-store", str(store), "--instances", "2",
               "--max-models", str(MAX_MODELS), "--hot-rate", str(HOT_RATE), "--speed", str(SPEED),
               "--body", BODY.decode(), "--chart", str(chart))
    total = re.search(r"^TOTAL\s+(\d+)\s+(\d+)\s+([\d.]+)", done.stdout, re.M)
    assert total is not None, done.stdout
    assert (int(total[1]), int(total[2])) == (REQUESTS, 0)
    second = float(total[3]) / 100
    assert abs(first - second) <= 0.02, f"hit rate {first:.3f} then {second:.3f}"
    assert re.search(r"^instance 1\s+\d+", done.stdout, re.M)

    assert chart.read_bytes()[:8] == PNG_MAGIC
    with Image.open(chart) as image:
        image.verify()
    with Image.open(chart) as image:
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200
    assert matplotlib.image.imread(chart).ndim == 3
