"""GET /metrics of the container (our MMS plugin) and its opt-in EMF lines, against real MMS processes."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support import Serve, running_serve

TARGET = "X-Amzn-SageMaker-Target-Model"
GOOD = "5.1,3.5,1.4,0.2"
BAD = "5.1,3.5"  # two features for a four-feature model: 400


def scrape(serve: Serve) -> dict[tuple[str, frozenset], float]:
    """Every sample of the container's /metrics, read with prometheus_client's own parser."""
    resp = requests.get(f"{serve.url}/metrics", timeout=10)
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(resp.text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def models_of(samples: dict, name: str) -> set[str]:
    return {dict(labels)["model"] for (n, labels) in samples if n == name and "model" in dict(labels)}


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory):
    with running_serve(tmp_path_factory.mktemp("metrics")) as server:
        yield server


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory):
    env = {"MME_METRICS_MAX_MODELS": "4", "MME_EMF_INTERVAL_SECONDS": "1", "MME_EMF_NAMESPACE": "test-ns",
           "MME_EMF_DIMENSIONS": "EndpointName=ep1"}
    with running_serve(tmp_path_factory.mktemp("metrics-capped"), **env) as server:
        yield server


def test_known_traffic_counts_per_model(plain: Serve, model_root: Path) -> None:
    opaque = "9f86d081884c7d659a2feaa0c55ad015"  # SageMaker sends a hash as the model name
    assert plain.load(opaque, model_root / "iris_logreg").status_code == 200
    assert plain.load("plain_b", model_root / "iris_logreg").status_code == 200
    failed = plain.load("broken", model_root / "no_model_file")
    assert failed.status_code == 400
    for _ in range(7):
        assert plain.invoke(opaque, GOOD, **{TARGET: "segment_a.tar.gz"}).status_code == 200
    for _ in range(3):
        assert plain.invoke(opaque, BAD, **{TARGET: "segment_a.tar.gz"}).status_code == 400
    for _ in range(4):
        assert plain.invoke("plain_b", GOOD).status_code == 200
    bytes_b = plain.ledger_bytes("plain_b")
    assert plain.unload("plain_b").status_code == 200
    assert plain.invoke("plain_b", GOOD).status_code == 404  # answered by MMS: Python never sees it

    s = scrape(plain)
    inv = "mme_container_invocations_total"
    assert value(s, inv, model="segment_a.tar.gz", status="200") == 7
    assert value(s, inv, model="segment_a.tar.gz", status="400") == 3
    assert value(s, inv, model="plain_b", status="200") == 4
    assert value(s, inv, model="plain_b", status="404") == 1
    assert opaque not in models_of(s, inv)  # labelled by the TargetModel header, not the opaque name
    lat = "mme_container_invocation_latency_seconds"
    assert value(s, lat + "_count", model="segment_a.tar.gz") == 10
    assert value(s, lat + "_bucket", model="segment_a.tar.gz", le="+Inf") == 10
    assert 0 < value(s, lat + "_sum", model="segment_a.tar.gz") < 10
    assert value(s, lat + "_bucket", model="segment_a.tar.gz", le="0.0001") is not None  # sub-ms buckets
    # The load (under the opaque name) is reported under the TargetModel learnt from its invokes.
    assert value(s, "mme_container_model_loading_seconds_count", model="segment_a.tar.gz") == 1
    assert value(s, "mme_container_model_loading_seconds_count", model="plain_b") == 1
    assert value(s, "mme_container_model_load_failures_total", model="broken", cause="bad_artifact") == 1
    assert value(s, "mme_container_model_unloads_total", model="plain_b") == 1
    assert value(s, "mme_container_model_unloads_total", model="segment_a.tar.gz") is None
    held = plain.ledger_bytes(opaque)
    assert held > 0 and bytes_b > 0
    assert value(s, "mme_container_model_bytes", model="segment_a.tar.gz") == held
    assert value(s, "mme_container_model_bytes", model="plain_b") is None  # unloaded: holds nothing
    assert value(s, "mme_container_bytes_held") == held
    assert value(s, "mme_container_model_workers", model="segment_a.tar.gz") == 1
    assert value(s, "mme_container_loaded_models") == 1
    assert value(s, "mme_container_insufficient_memory_total") == 0
    assert value(s, "mme_container_zygote_restarts_total") == 0


def test_emf_is_off_by_default(plain: Serve) -> None:
    assert '"_aws"' not in plain.log()


def test_cap_folds_models_past_it_into_other(capped: Serve, model_root: Path) -> None:
    names = [f"cap{i:02d}" for i in range(12)]  # 3x the cap of 4
    for name in names:
        assert capped.load(name, model_root / "iris_logreg").status_code == 200
    for i, name in enumerate(names):
        for _ in range(i + 1):
            assert capped.invoke(name, GOOD, **{TARGET: f"t{i:02d}.tar.gz"}).status_code == 200
    s = scrape(capped)
    inv = "mme_container_invocations_total"
    assert models_of(s, inv) == {"t00.tar.gz", "t01.tar.gz", "t02.tar.gz", "t03.tar.gz", "other"}
    for i in range(4):
        assert value(s, inv, model=f"t{i:02d}.tar.gz", status="200") == i + 1
    assert value(s, inv, model="other", status="200") == sum(range(5, 13))
    assert value(s, "mme_container_model_loading_seconds_count", model="other") == 8
    assert value(s, "mme_container_model_workers", model="other") == 8
    assert value(s, "mme_container_metrics_tracked_models") == 4
    for name in ("mme_container_model_bytes", "mme_container_invocation_latency_seconds_count"):
        assert len(models_of(s, name)) == 5


def emf_lines(serve: Serve) -> list[dict]:
    lines = serve.log().splitlines()
    return [json.loads(line) for line in lines if line.startswith('{"') and '"_aws"' in line]


def test_emf_lines_follow_the_specification(capped: Serve, model_root: Path) -> None:
    assert capped.load("emf_model", model_root / "iris_logreg").status_code in (200, 409)
    def other_total(s: dict) -> float:
        return sum(v for (n, labels), v in s.items()
                   if n == "mme_container_invocations_total" and dict(labels)["model"] == "other")

    def emf_total_reaches(expected: float) -> float:
        deadline = time.monotonic() + 10
        while True:  # the writer flushes once a second
            total = sum(line.get("Invocations", 0) for line in emf_lines(capped) if line["Model"] == "other")
            if total >= expected or time.monotonic() > deadline:
                return total
            time.sleep(0.2)

    before = other_total(scrape(capped))
    assert emf_total_reaches(before) == before  # every invoke so far was written out, once
    for _ in range(5):
        assert capped.invoke("emf_model", GOOD).status_code == 200
    assert capped.invoke("emf_model", BAD).status_code == 400
    total = emf_total_reaches(before + 6)
    lines = emf_lines(capped)
    assert total - before == 6  # aggregated: six invokes in a line or two, not six lines
    per_interval = defaultdict(list)
    for line in lines:
        aws = line["_aws"]
        assert isinstance(aws["Timestamp"], int) and abs(aws["Timestamp"] / 1000 - time.time()) < 600
        (directive,) = aws["CloudWatchMetrics"]
        assert directive["Namespace"] == "test-ns"
        assert directive["Dimensions"] == [["Model", "EndpointName"]]
        assert line["EndpointName"] == "ep1"
        for metric in directive["Metrics"]:
            assert set(metric) == {"Name", "Unit"}
            assert metric["Unit"] in {"Count", "Milliseconds"}
            assert isinstance(line[metric["Name"]], (int, float))  # the value is a top-level member
        per_interval[aws["Timestamp"]].append(line["Model"])
    for models in per_interval.values():
        assert len(models) == len(set(models))  # one line per model per interval


def test_the_harness_merges_the_containers_series_into_its_own(plain: Serve) -> None:
    """mme-local's /metrics: its own SageMaker-side series, then the container's, in one parseable text."""
    from sklearn_mme.harness import container_metrics
    from sklearn_mme.harness.metrics import HarnessMetrics, parse_exposition, sample_sum

    metrics = HarnessMetrics()
    metrics.cache_hit.labels("segment_a.tar.gz").inc()
    metrics.sources.append(lambda: container_metrics.scrape(plain.url))
    merged = parse_exposition(metrics.exposition().decode())
    assert sample_sum(merged, "mme_model_cache_hit_total", model="segment_a.tar.gz") == 1
    assert sample_sum(merged, "mme_container_invocations_total", model="segment_a.tar.gz") >= 10
    rows = {row[0]: row for row in container_metrics.per_model_rows(container_metrics.scrape(plain.url))}
    assert rows["segment_a.tar.gz"][1:3] == (10, 3) and rows["segment_a.tar.gz"][4] == 1
    assert container_metrics.scrape("http://127.0.0.1:9") == ""  # a container that is gone: nothing added
