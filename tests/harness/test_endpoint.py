"""Three real containers behind one runtime API, driven through boto3: SageMaker's MME routing.

The tests share one endpoint and run in order: the last one kills an instance's container.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from sklearn_mme.harness.container import session_pids
from sklearn_mme.harness.endpoint import Endpoint
from sklearn_mme.harness.metrics import parse_exposition, sample_sum
from tests.harness.endpoint_support import BODY, answer_of, key, numbered_store, running_endpoint
from tests.harness_process import runtime_client

pytestmark = pytest.mark.mms

MODELS = 8


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoint]:
    store = numbered_store(tmp_path_factory.mktemp("endpoint"), MODELS)
    with running_endpoint(store, 3, hot_rate=20.0) as running:
        yield running


def invoke(client, i: int) -> tuple[float, int, str]:
    """(the model's answer, the instance that answered, hit/miss) through boto3."""
    resp = client.invoke_endpoint(EndpointName="local", TargetModel=key(i), Body=BODY, ContentType="text/csv")
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    return answer_of(resp["Body"].read()), int(headers["x-mme-instance"]), headers["x-mme-cache"]


def holders(endpoint: Endpoint, i: int) -> set[int]:
    """The instances whose registry has model i loaded now."""
    return {inst.index for inst in endpoint.instances
            if inst.manager is not None and inst.manager.registry.state(key(i)) == "loaded"}


def test_a_models_requests_stay_on_the_instance_that_has_it(endpoint: Endpoint) -> None:
    client = runtime_client(endpoint.url)
    seen: dict[int, list[tuple[int, str]]] = {i: [] for i in range(6)}
    for _round in range(5):
        for i in range(6):
            answer, instance, cache = invoke(client, i)
            assert answer == i
            seen[i].append((instance, cache))
            time.sleep(0.02)  # an ordinary pace: no model is hot
    for i, calls in seen.items():
        instances = {instance for instance, _ in calls}
        assert len(instances) == 1, f"model {i} answered by {instances}"
        assert [cache for _, cache in calls] == ["miss"] + ["hit"] * 4
        assert holders(endpoint, i) == instances
    # Models that were nowhere went to the least loaded instance: 6 models, 2 on each of the 3.
    assert Counter(calls[0][0] for calls in seen.values()) == {0: 2, 1: 2, 2: 2}
    samples = parse_exposition(requests.get(endpoint.url + "/metrics", timeout=10).text)
    for inst in range(3):
        assert sample_sum(samples, "mme_loaded_model_count", instance=str(inst)) == 2
        assert sample_sum(samples, "mme_model_cache_hit_total", instance=str(inst)) == 8
        assert sample_sum(samples, "mme_model_cache_miss_total", instance=str(inst)) == 2
    assert sample_sum(samples, "mme_model_cache_hit_total", instance="all") == 24
    # The containers' own series carry the instance too.
    assert sample_sum(samples, "mme_container_loaded_models", instance="all") == 6


def test_an_error_answer_names_its_instance_and_loses_nothing(endpoint: Endpoint) -> None:
    where = holders(endpoint, 0)
    resp = requests.post(f"{endpoint.url}/endpoints/local/invocations", data=b"not,four,numbers",
                         headers={"X-Amzn-SageMaker-Target-Model": key(0), "Content-Type": "text/csv"},
                         timeout=30)
    assert resp.status_code == 424 and resp.json()["OriginalStatusCode"] == 400
    assert {int(resp.headers["X-Mme-Instance"])} == where
    assert holders(endpoint, 0) == where


def test_a_hot_model_is_loaded_on_more_than_one_instance(endpoint: Endpoint) -> None:
    hot = 6
    assert holders(endpoint, hot) == set()
    client = runtime_client(endpoint.url, pool=8)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: invoke(client, hot), range(400)))
    assert {answer for answer, _, _ in results} == {hot}
    answered_by = Counter(instance for _, instance, _ in results)
    assert len(answered_by) >= 2, answered_by
    assert len(holders(endpoint, hot)) >= 2
    # A quiet model next to it still lives on one instance.
    assert len(holders(endpoint, 0)) == 1


def test_killing_an_instance_sends_its_traffic_to_the_others(endpoint: Endpoint) -> None:
    client = runtime_client(endpoint.url, pool=4)
    victim = next(iter(holders(endpoint, 1)))
    on_victim = [i for i in range(6) if holders(endpoint, i) == {victim}]
    assert on_victim
    stop = threading.Event()
    outcomes: list[tuple[int, float, int]] = []
    errors: list[str] = []

    def traffic(worker: int) -> None:
        n = 0
        while not stop.is_set():
            i = on_victim[(n + worker) % len(on_victim)]
            n += 1
            try:
                answer, instance, _ = invoke(client, i)
            except Exception as err:  # counted: the test fails on any
                errors.append(f"{key(i)}: {err}")
                continue
            outcomes.append((i, answer, instance))

    threads = [threading.Thread(target=traffic, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    proc = endpoint.instances[victim].runtime.proc  # type: ignore[attr-defined]
    old_session = session_pids(proc.pid)
    assert len(old_session) > 3  # serve, the zygote, MMS's Java front, the models' launchers and workers
    killed_at = len(outcomes)
    os.killpg(proc.pid, signal.SIGKILL)  # a crash: serve and its zygote at once (MMS's Java follows)
    time.sleep(2.0)
    stop.set()
    for t in threads:
        t.join(30)
    assert errors == []
    assert all(answer == i for i, answer, _ in outcomes), "a wrong answer"
    after = outcomes[killed_at + 4:]  # past the requests that may have been answered before the kill
    assert len(after) > 10
    assert victim not in {instance for _, _, instance in after}
    # The models the victim held are now loaded elsewhere.
    for i in on_victim:
        assert holders(endpoint, i) - {victim}
    # The instance is replaced, as SageMaker replaces a failed one: a new, empty container, and nothing of
    # the old one left running (its launchers sat in a process group of their own).
    deadline = time.monotonic() + 90
    instance = endpoint.instances[victim]
    while not (instance.live() and instance.runtime.proc is not proc):  # type: ignore[attr-defined]
        assert time.monotonic() < deadline, "the dead instance was not replaced"
        time.sleep(0.2)
    assert session_pids(proc.pid) == []
    assert instance.manager is not None and instance.manager.registry.count() == 0
