"""Scripted load / evict / invoke sessions against a running harness, with a report table.

Requests go through boto3's real `sagemaker-runtime` client (so the session also proves the wire format); the
per-model facts come from the client side (answers, X-Mme-Cache) and from the harness's /metrics, read before
and after so a shared harness still gives this session's numbers.
"""

from __future__ import annotations

import json
import random
import statistics
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from sklearn_mme.harness.metrics import parse_exposition, sample_sum

PATTERNS = ("round-robin", "random", "sequential")


class ScenarioError(ValueError):
    """The scenario script is malformed; the message says where."""


@dataclass(frozen=True)
class Request:
    model: str
    body: bytes
    content_type: str = "text/csv"
    accept: str = "application/json"


@dataclass
class Outcome:
    model: str
    ok: bool
    seconds: float
    cache: str = ""  # hit / miss from X-Mme-Cache
    wait_ms: float = 0.0
    body: bytes = b""
    error: str = ""


@dataclass
class ModelRow:
    model: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    hits: int = 0
    misses: int = 0
    downloads: int = 0
    loads: int = 0
    unloads: int = 0
    load_seconds: float = 0.0
    wait_seconds_max: float = 0.0
    latencies: list[float] = field(default_factory=list)


@dataclass
class Report:
    rows: dict[str, ModelRow]
    outcomes: list[Outcome]
    seconds: float
    max_loaded: int

    @property
    def totals(self) -> ModelRow:
        total = ModelRow("TOTAL")
        for row in self.rows.values():
            for name in ("requests", "ok", "errors", "hits", "misses", "downloads", "loads", "unloads"):
                setattr(total, name, getattr(total, name) + getattr(row, name))
            total.load_seconds += row.load_seconds
            total.wait_seconds_max = max(total.wait_seconds_max, row.wait_seconds_max)
            total.latencies.extend(row.latencies)
        return total

    def table(self) -> str:
        header = (
            "model",
            "reqs",
            "ok",
            "err",
            "hits",
            "misses",
            "dl",
            "loads",
            "unloads",
            "load ms/ea",
            "max wait ms",
            "p50 ms",
            "max ms",
        )
        lines = []
        for row in [*self.rows.values(), self.totals]:
            lat = sorted(row.latencies)
            lines.append(
                (
                    row.model,
                    row.requests,
                    row.ok,
                    row.errors,
                    row.hits,
                    row.misses,
                    row.downloads,
                    row.loads,
                    row.unloads,
                    f"{1000 * row.load_seconds / row.loads:.0f}" if row.loads else "-",
                    f"{1000 * row.wait_seconds_max:.0f}",
                    f"{1000 * statistics.median(lat):.1f}" if lat else "-",
                    f"{1000 * lat[-1]:.1f}" if lat else "-",
                )
            )
        widths = [max(len(str(x)) for x in col) for col in zip(header, *lines, strict=True)]

        def fmt(cells: tuple) -> str:
            first, *rest = (str(c) for c in cells)
            return "  ".join(
                [first.ljust(widths[0])] + [c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)]
            )

        rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
        return "\n".join([fmt(header), rule, *(fmt(line) for line in lines[:-1]), rule, fmt(lines[-1])])


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


def run(
    endpoint_url: str,
    plan: list[Request],
    endpoint_name: str = "mme-local",
    concurrency: int = 1,
    progress: bool = True,
    on_outcome: Callable[[Request, Outcome], None] | None = None,
) -> Report:
    """Send `plan` through boto3 to the harness and build the report."""
    from botocore.exceptions import ClientError
    from tqdm import tqdm

    client = runtime_client(endpoint_url, max_pool=max(concurrency, 10))
    before = _metrics(endpoint_url)
    max_loaded = int(sample_sum(before, "mme_loaded_model_count"))
    stop = threading.Event()

    def watch() -> None:  # sample the loaded-model gauge while the session runs
        nonlocal max_loaded
        while not stop.wait(0.05):
            try:
                max_loaded = max(
                    max_loaded, int(sample_sum(_metrics(endpoint_url), "mme_loaded_model_count"))
                )
            except requests.RequestException:
                pass

    def send(req: Request) -> Outcome:
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
            headers = resp["ResponseMetadata"]["HTTPHeaders"]
            out = Outcome(
                req.model,
                True,
                time.perf_counter() - t0,
                headers.get("x-mme-cache", ""),
                float(headers.get("x-mme-load-wait-ms", 0)),
                body,
            )
        except ClientError as err:
            error = err.response.get("Error", {})
            out = Outcome(
                req.model,
                False,
                time.perf_counter() - t0,
                error=f"{error.get('Code')}: {error.get('Message')}",
            )
        if on_outcome is not None:
            on_outcome(req, out)
        return out

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    started = time.perf_counter()
    try:
        with (
            ThreadPoolExecutor(concurrency) as pool,
            tqdm(total=len(plan), desc="invocations", unit="req", disable=not progress, leave=False) as bar,
        ):
            outcomes = []
            for out in pool.map(send, plan):
                outcomes.append(out)
                bar.update(1)
    finally:
        stop.set()
        watcher.join()
    seconds = time.perf_counter() - started
    after = _metrics(endpoint_url)
    max_loaded = max(max_loaded, int(sample_sum(after, "mme_loaded_model_count")))

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
        waits = [o.wait_ms / 1000 for o in outcomes if o.model == key]
        row.wait_seconds_max = max(waits, default=0.0)
    return Report(rows, outcomes, seconds, max_loaded)
