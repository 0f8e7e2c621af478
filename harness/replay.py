"""Replay a trace against a running endpoint through boto3, at the trace's own pace or faster.

Requests are sent at their scheduled times (trace offset / speed) whatever the answers before them take, by
up to `concurrency` clients at once; a request that finds them all busy goes late and its lateness is
recorded. Each answer's instance and hit/miss come from the runtime API's X-Mme-Instance / X-Mme-Cache
headers; loads, evictions and the containers' 507s from /metrics, read before and after.
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import requests

from sklearn_mme.harness.metrics import parse_exposition
from sklearn_mme.harness.scenario import runtime_client
from sklearn_mme.harness.trace import TraceRequest

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@dataclass(frozen=True)
class Sent:
    """One request of the replay and what came back."""

    at: float  # its offset in the trace, seconds
    model: str
    status: int  # 200, or the runtime API's error status (424 ModelError, 429, ...); 0: no answer
    seconds: float  # send to answer, as the client saw it
    instance: str = ""  # which instance answered ("" when unknown: an error answer)
    cache: str = ""  # hit / miss
    lag: float = 0.0  # how late it was sent against its schedule
    original_status: int | None = None  # the model's own status behind a 424 (507: no room)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == 200


@dataclass
class ReplayResult:
    sent: list[Sent]
    seconds: float  # wall-clock of the whole replay
    speed: float
    before: Samples  # /metrics before and after
    after: Samples

    def delta(self, name: str, **labels: str) -> float:
        from sklearn_mme.harness.metrics import sample_sum

        return sample_sum(self.after, name, **labels) - sample_sum(self.before, name, **labels)


def scrape(endpoint_url: str) -> Samples:
    resp = requests.get(endpoint_url.rstrip("/") + "/metrics", timeout=30)
    resp.raise_for_status()
    return parse_exposition(resp.text)


def _send(client: Any, endpoint_name: str, req: TraceRequest, body: bytes, content_type: str,
          due: float) -> Sent:
    from botocore.exceptions import BotoCoreError, ClientError

    t0 = time.perf_counter()
    lag = max(t0 - due, 0.0)
    try:
        resp = client.invoke_endpoint(
            EndpointName=endpoint_name, TargetModel=req.model, Body=body, ContentType=content_type
        )
        resp["Body"].read()
    except ClientError as err:
        seconds = time.perf_counter() - t0
        error = err.response.get("Error", {})
        original = err.response.get("OriginalStatusCode")
        meta = err.response["ResponseMetadata"]
        return Sent(req.at, req.model, int(meta["HTTPStatusCode"]), seconds,
                    meta.get("HTTPHeaders", {}).get("x-mme-instance", ""), lag=lag,
                    original_status=int(original) if original is not None else None,
                    error=f"{error.get('Code')}: {error.get('Message')}")
    except BotoCoreError as err:
        return Sent(req.at, req.model, 0, time.perf_counter() - t0, lag=lag, error=str(err))
    seconds = time.perf_counter() - t0
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    return Sent(req.at, req.model, 200, seconds, headers.get("x-mme-instance", ""),
                headers.get("x-mme-cache", ""), lag)


def replay(
    endpoint_url: str,
    trace: list[TraceRequest],
    speed: float = 1.0,
    concurrency: int = 16,
    body: bytes = b"",
    content_type: str = "text/csv",
    endpoint_name: str = "mme-local",
    progress: bool = True,
) -> ReplayResult:
    """Send `trace` to the endpoint, `speed` times its own pace; a request without a body sends `body`."""
    from tqdm import tqdm

    client = runtime_client(endpoint_url, max_pool=concurrency)
    before = scrape(endpoint_url)
    futures: list[Future[Sent]] = []
    with (
        ThreadPoolExecutor(concurrency, thread_name_prefix="replay") as pool,
        tqdm(total=len(trace), desc="replay", unit="req", disable=None if progress else True,
             leave=False) as bar,
    ):
        start = time.perf_counter()
        for req in trace:
            due = start + req.at / speed
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            data = req.body.encode() if req.body is not None else body
            kind = req.content_type or content_type
            future = pool.submit(_send, client, endpoint_name, req, data, kind, due)
            future.add_done_callback(lambda _f: bar.update(1))
            futures.append(future)
        sent = [f.result() for f in futures]
    seconds = time.perf_counter() - start
    return ReplayResult(sent, seconds, speed, before, scrape(endpoint_url))
