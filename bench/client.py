"""The client side of every phase: loads, invokes over keep-alive connections, unloads.

http.client rather than requests: a few times less client CPU per call, which matters on a 2-core
machine where the client shares the cores with the server it measures.
"""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from bench.models import BenchModel

CSV = {"Content-Type": "text/csv"}
JSON = {"Content-Type": "application/json"}


def note(msg: str) -> None:
    """A progress message: stderr, like the bars (stdout is for the table), without breaking them."""
    tqdm.write(msg, file=sys.stderr)


class BenchError(RuntimeError):
    """A server did something that makes its figures meaningless (a failed load, a wrong answer)."""


class Http:
    """One keep-alive connection to 127.0.0.1:port; reconnects (once per call) if the server closed it."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.port, self.timeout = port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: bytes | None = None,
             headers: dict[str, str] | None = None, retry: bool = True) -> tuple[int, bytes]:
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                resp = self.conn.getresponse()
                return resp.status, resp.read()
            except (http.client.HTTPException, OSError):
                self.close()
                if attempt or not retry:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def model_workers(http: Http, name: str) -> int:
    """How many workers MMS lists for `name` now (GET /models/{name})."""
    status, body = http.call("GET", f"/models/{name}")
    if status != 200:
        raise BenchError(f"GET /models/{name}: {status}")
    info = json.loads(body)
    return len((info[0] if isinstance(info, list) else info)["workers"])


def model_dir(model: BenchModel, layout: str) -> Path:
    return model.vanilla_dir if layout == "vanilla" else model.ours_dir


Request = tuple[str, str, bytes | None, dict[str, str]]  # method, path, body, headers


class Protocol:
    """How a server is asked to load, invoke and unload a model: MMS's management and invoke API.

    Another server (bench/mlserver.py) subclasses this; the phases below only speak through it.
    """

    def __init__(self, layout: str = "ours") -> None:
        self.layout = layout

    def prepare(self, models: Sequence[BenchModel]) -> None:
        """Anything the server needs on disk before the first load (nothing, for MMS)."""

    def load(self, m: BenchModel) -> Request:
        body = json.dumps({"model_name": m.name, "url": str(model_dir(m, self.layout))}).encode()
        return "POST", "/models", body, JSON

    def invoke(self, m: BenchModel) -> Request:
        return "POST", f"/models/{m.name}/invoke", m.body, CSV

    def unload(self, m: BenchModel) -> Request:
        return "DELETE", f"/models/{m.name}", None, {}

    def predictions(self, body: bytes) -> tuple[int, ...]:
        return tuple(int(p) for p in json.loads(body)["predictions"])


MMS = Protocol()


@dataclass
class LoadRun:
    seconds: list[float]  # per successful load, in order
    stopped: str | None = None  # why the loads ended before the last model, if they did


def load_all(http: Http, models: Sequence[BenchModel], layout: str, desc: str, deadline: float,
             stop_when: Callable[[int], str | None] | None = None, proto: Protocol | None = None) -> LoadRun:
    """POST /models for each model in turn (as SageMaker does), timing each until its 200.

    Ends early, saying why, at the first failed load, when the deadline passes, or when
    `stop_when(i)` gives a reason; the caller decides whether that voids the run.
    """
    proto = proto or Protocol(layout)
    proto.prepare(models)
    run = LoadRun([])
    for i, m in enumerate(tqdm(models, desc=desc, unit="model", leave=False)):
        if time.monotonic() > deadline:
            run.stopped = f"time budget spent after {i} models"
        elif stop_when is not None:
            run.stopped = stop_when(i)
        if run.stopped:
            break
        method, path, body, headers = proto.load(m)
        t0 = time.perf_counter()
        status, text = http.call(method, path, body, headers, retry=False)
        elapsed = time.perf_counter() - t0
        if status != 200:
            run.stopped = f"loading model #{i + 1} ({m.name}) answered {status}: {text[:200]!r}"
            break
        run.seconds.append(elapsed)
    if run.stopped:
        note(f"[bench] {desc}: stopped: {run.stopped}")
    return run


def check_answer(model: BenchModel, status: int, body: bytes, proto: Protocol = MMS) -> str | None:
    """None when the server answered this model's request right, else what was wrong."""
    if status != 200:
        return f"{model.name}: status {status}: {body[:200]!r}"
    try:
        got = proto.predictions(body)
    except (ValueError, KeyError, TypeError) as exc:
        return f"{model.name}: unreadable answer ({exc}): {body[:200]!r}"
    if got != model.expected:
        return f"{model.name}: predicted {got}, expected {model.expected}"
    return None


def verify_all(http: Http, models: Sequence[BenchModel], desc: str, proto: Protocol = MMS) -> None:
    """Invoke every model once (this also warms its worker) and insist on the right predictions."""
    problems = []
    for m in tqdm(models, desc=desc, unit="model", leave=False):
        status, body = http.call(*proto.invoke(m))
        if (problem := check_answer(m, status, body, proto)) is not None:
            problems.append(problem)
    if problems:
        raise BenchError(f"{len(problems)} of {len(models)} models answered wrong, e.g. {problems[0]}")


@dataclass
class Latencies:
    seconds: list[float] = field(default_factory=list)
    errors: int = 0
    wrong: int = 0


def warm_latency(http: Http, models: Sequence[BenchModel], count: int, deadline: float,
                 desc: str, proto: Protocol = MMS, new_connection: bool = False) -> Latencies:
    """`count` invokes round-robin over the models, one at a time, on one keep-alive connection
    (or, with `new_connection`, a fresh TCP connection per request, its connect inside the timing)."""
    out = Latencies()
    for i in tqdm(range(count), desc=desc, unit="req", leave=False, mininterval=0.5):
        if time.monotonic() > deadline:
            note(f"[bench] {desc}: time budget spent after {i} requests")
            break
        m = models[i % len(models)]
        request = proto.invoke(m)
        if new_connection:
            http.close()
        t0 = time.perf_counter()
        try:
            status, body = http.call(*request)
        except (http.client.HTTPException, OSError):
            out.errors += 1
            continue
        out.seconds.append(time.perf_counter() - t0)
        # Checked outside the timed span: the answer must be right, not only fast.
        if check_answer(m, status, body, proto) is not None:
            out.wrong += 1
    return out


@dataclass
class Throughput:
    requests_per_s: float
    ok: int
    errors: int
    elapsed_s: float


def throughput(port: int, models: Sequence[BenchModel], clients: int, duration_s: float,
               max_requests: int, proto: Protocol = MMS) -> Throughput:
    """`clients` threads, each with its own keep-alive connection, invoking as fast as answers come."""
    stop = threading.Event()
    start = threading.Barrier(clients + 1)
    per_client = max(1, max_requests // clients)
    results: list[tuple[int, int]] = [(0, 0)] * clients

    def client(idx: int) -> None:
        http, ok, errors = Http(port), 0, 0
        try:
            start.wait(timeout=30)
            for i in range(per_client):
                if stop.is_set():
                    break
                m = models[(idx * 7 + i) % len(models)]  # spread the clients over different models
                try:
                    status, body = http.call(*proto.invoke(m))
                except (http.client.HTTPException, OSError):
                    errors += 1
                    continue
                if status == 200:
                    ok += 1
                else:
                    errors += 1
        except threading.BrokenBarrierError:
            pass
        finally:
            http.close()
            results[idx] = (ok, errors)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait(timeout=30)
    t0 = time.perf_counter()
    stop.wait(duration_s)
    stop.set()
    for t in threads:
        t.join(timeout=90)  # an in-flight call ends within the server's 60 s response timeout
    elapsed = time.perf_counter() - t0
    ok = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    return Throughput(ok / elapsed if elapsed > 0 else 0.0, ok, errors, elapsed)


def unload_all(http: Http, models: Sequence[BenchModel], desc: str, deadline: float,
               proto: Protocol = MMS) -> list[float]:
    """DELETE /models/{name} for each; seconds per unload. A non-200 means memory may not come back."""
    times = []
    for i, m in enumerate(tqdm(models, desc=desc, unit="model", leave=False)):
        if time.monotonic() > deadline:
            note(f"[bench] {desc}: time budget spent after {i} unloads")
            break
        method, path, body, headers = proto.unload(m)
        t0 = time.perf_counter()
        status, text = http.call(method, path, body, headers, retry=False)
        if status != 200:
            raise BenchError(f"unloading {m.name} answered {status}: {text[:300]!r}")
        times.append(time.perf_counter() - t0)
    return times
