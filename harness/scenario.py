"""Scripted load / evict / invoke sessions against a running harness, with a report table.

Requests go through boto3's real `sagemaker-runtime` client (so the session also proves the wire format); the
per-model facts come from the client side (answers, X-Mme-Cache) and from the harness's /metrics, read before
and after so a shared harness still gives this session's numbers.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sklearn_mme.harness.metrics import parse_exposition, sample_sum
from sklearn_mme.harness.scenario_report import ModelRow, Outcome, Report

PATTERNS = ("round-robin", "random", "sequential")


class ScenarioError(ValueError):
    """The scenario script is malformed; the message says where."""


@dataclass(frozen=True)
class Request:
    model: str
    body: bytes
    content_type: str = "text/csv"
    accept: str = "application/json"


def load_script(path: Path) -> tuple[list[Request], int, int, str, int]:
    """Read a JSON scenario: {"models": {KEY: {"body", "content_type", "accept"}}, "pattern", "rounds",
    "concurrency", "seed"}; returns (requests per round, rounds, concurrency, pattern, seed)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ScenarioError(f"cannot read scenario {path}: {err}") from None
    if not isinstance(data, dict) or not isinstance(data.get("models"), dict) or not data["models"]:
        raise ScenarioError(f"{path}: expected an object with a non-empty 'models' mapping")
    reqs = []
    for key, spec in data["models"].items():
        if not isinstance(spec, dict) or "body" not in spec:
            raise ScenarioError(f"{path}: models[{key!r}] needs a 'body'")
        body = spec["body"]
        body_bytes = json.dumps(body).encode() if not isinstance(body, str) else body.encode()
        reqs.append(
            Request(
                key, body_bytes, spec.get("content_type", "text/csv"), spec.get("accept", "application/json")
            )
        )
    pattern = data.get("pattern", "round-robin")
    if pattern not in PATTERNS:
        raise ScenarioError(f"{path}: pattern must be one of {', '.join(PATTERNS)}")
    try:
        rounds, concurrency, seed = (
            int(data.get("rounds", 3)),
            int(data.get("concurrency", 1)),
            int(data.get("seed", 0)),
        )
    except (TypeError, ValueError):
        raise ScenarioError(f"{path}: rounds, concurrency and seed must be whole numbers") from None
    if rounds < 1 or concurrency < 1:
        raise ScenarioError(f"{path}: rounds and concurrency must be at least 1")
    return reqs, rounds, concurrency, pattern, seed


def schedule(requests_per_round: list[Request], rounds: int, pattern: str, seed: int = 0) -> list[Request]:
    """The order requests are sent in: round-robin (A B C A B C), sequential (A A A B B B) or random."""
    if pattern == "sequential":
        return [r for r in requests_per_round for _ in range(rounds)]
    out = [r for _ in range(rounds) for r in requests_per_round]
    if pattern == "random":
        random.Random(seed).shuffle(out)
    return out


def runtime_client(endpoint_url: str, max_pool: int = 10, retries: int = 1) -> Any:
    """boto3's sagemaker-runtime client pointed at the harness; dummy credentials, never real AWS."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "sagemaker-runtime",
        endpoint_url=endpoint_url,
        region_name="us-east-1",
        aws_access_key_id="mme-local",
        aws_secret_access_key="mme-local",
        config=Config(
            max_pool_connections=max_pool,
            retries={"total_max_attempts": retries, "mode": "standard"},
            read_timeout=70,
            connect_timeout=5,
        ),
    )


def _metrics(endpoint_url: str) -> dict:
    resp = requests.get(endpoint_url.rstrip("/") + "/metrics", timeout=10)
    resp.raise_for_status()
    return parse_exposition(resp.text)


class _LoadedWatcher:
    """Samples the harness's loaded-model gauge while a session runs: the most seen at once."""

    def __init__(self, endpoint_url: str, start: dict) -> None:
        self.endpoint_url = endpoint_url
        self.max_loaded = int(sample_sum(start, "mme_loaded_model_count"))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.wait(0.05):
            try:
                self.see(_metrics(self.endpoint_url))
            except requests.RequestException:
                pass

    def see(self, samples: dict) -> None:
        self.max_loaded = max(self.max_loaded, int(sample_sum(samples, "mme_loaded_model_count")))

    def __enter__(self) -> _LoadedWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _send(client: Any, endpoint_name: str, req: Request) -> Outcome:
    """One invocation through boto3; an error answer becomes a failed Outcome."""
    from botocore.exceptions import ClientError

    t0 = time.perf_counter()
    try:
        resp = client.invoke_endpoint(
            EndpointName=endpoint_name,
            TargetModel=req.model,
            Body=req.body,
            ContentType=req.content_type,
            Accept=req.accept,
        )
        body = resp["Body"].read()
    except ClientError as err:
        error = err.response.get("Error", {})
        return Outcome(
            req.model, False, time.perf_counter() - t0, error=f"{error.get('Code')}: {error.get('Message')}"
        )
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    return Outcome(
        req.model,
        True,
        time.perf_counter() - t0,
        headers.get("x-mme-cache", ""),
        float(headers.get("x-mme-load-wait-ms", 0)),
        body,
    )


def _rows(plan: list[Request], outcomes: list[Outcome], before: dict, after: dict) -> dict[str, ModelRow]:
    """Per-model rows: requests and latencies from the client side, loads and the rest from /metrics."""

    def delta(name: str, **labels: str) -> float:
        return sample_sum(after, name, **labels) - sample_sum(before, name, **labels)

    rows: dict[str, ModelRow] = {}
    for req in plan:
        rows.setdefault(req.model, ModelRow(req.model))
    for out in outcomes:
        row = rows[out.model]
        row.requests += 1
        row.ok += out.ok
        row.errors += not out.ok
        if out.ok:
            row.latencies.append(out.seconds)
    for key, row in rows.items():
        row.hits = int(delta("mme_model_cache_hit_total", model=key))
        row.misses = int(delta("mme_model_cache_miss_total", model=key))
        row.downloads = int(delta("mme_model_downloading_seconds_count", model=key))
        row.loads = int(delta("mme_model_loading_seconds_count", model=key))
        row.unloads = int(delta("mme_model_unload_total", model=key))
        row.load_seconds = delta("mme_model_loading_seconds_sum", model=key)
        row.wait_seconds_max = max((o.wait_ms / 1000 for o in outcomes if o.model == key), default=0.0)
    return rows


def run(
    endpoint_url: str,
    plan: list[Request],
    endpoint_name: str = "mme-local",
    concurrency: int = 1,
    progress: bool = True,
    on_outcome: Callable[[Request, Outcome], None] | None = None,
) -> Report:
    """Send `plan` through boto3 to the harness and build the report."""
    from tqdm import tqdm

    client = runtime_client(endpoint_url, max_pool=max(concurrency, 10))

    def send(req: Request) -> Outcome:
        out = _send(client, endpoint_name, req)
        if on_outcome is not None:
            on_outcome(req, out)
        return out

    before = _metrics(endpoint_url)
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    with (
        _LoadedWatcher(endpoint_url, before) as watcher,
        ThreadPoolExecutor(concurrency) as pool,
        tqdm(total=len(plan), desc="invocations", unit="req", disable=not progress, leave=False) as bar,
    ):
        for out in pool.map(send, plan):
            outcomes.append(out)
            bar.update(1)
    seconds = time.perf_counter() - started
    after = _metrics(endpoint_url)
    watcher.see(after)
    return Report(_rows(plan, outcomes, before, after), outcomes, seconds, watcher.max_loaded)
