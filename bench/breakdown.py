"""Where one warm request's time goes in ours, from timestamps (the `--latency` mode's first table).

The bench starts `container/serve` with MME_STAGE_LOG, so each worker writes its stage timestamps per
invoke (container/stage_clock.py), and takes its own perf_counter_ns around each request on one keep-alive
connection. Both read CLOCK_MONOTONIC, so a request splits into: client -> worker (http.client, loopback
TCP, MMS's Netty front, the job queue, MMS's worker thread, its frame, the Unix socket, poll's wake-up),
the worker's own stages, and worker -> client (back the same way). `GET /ping` is the Java front's HTTP
floor (no worker). In-process, on the same models: the handler's decode / predict / encode, and MMS's
own frame codec + Service.predict against ours, on a real socket pair.
"""

from __future__ import annotations

import logging
import os
import socket
import statistics
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.client import BenchError, Http, check_answer
from bench.models import BenchModel
from bench.servers import Ours

ROWS = (  # label, start, end: client marks c0/c1, worker marks as in container/stage_clock.STAGES
    ("client -> worker: HTTP in, Netty, MMS queue + worker thread, frame out, socket", "c0", "readable"),
    ("worker: read + decode MMS's frame", "readable", "decoded"),
    ("worker: MMS request context (headers, ids)", "decoded", "handle_in"),
    ("worker: mms_entry.handle -> handler (decode, predict, encode)", "handle_in", "handle_out"),
    ("worker: answer frame + send", "handle_out", "sent"),
    ("worker -> client: socket, MMS reply thread, Netty, HTTP out, client parse", "sent", "c1"),
)


# With the Java front's own marks (container/java JavaStages: "H read answer", "W dispatch written reply"),
# the spans outside the worker split further.
JAVA_ROWS = (
    ("client -> Java: http.client send, loopback TCP, Netty read + HTTP decode", "c0", "read"),
    ("Java: MMS's handlers, job queue, MMS's worker thread wakes", "read", "dispatch"),
    ("Java: request to the backend's event loop (a thread hop), frame encode", "dispatch", "written"),
    ("Java -> worker: Unix socket, the worker wakes", "written", "readable"),
    *ROWS[1:-1],
    ("worker -> Java: Unix socket, backend event loop wakes, frame decode", "sent", "reply"),
    ("Java: answer built, handed to the client's event loop (a thread hop)", "reply", "answer"),
    ("Java -> client: HTTP encode, write, loopback, client wakes and parses", "answer", "c1"),
)
WORKER_MARKS = ("readable", "decoded", "handle_in", "handle_out", "sent")


def _java_lines(path: Path) -> dict[str, list[tuple[int, ...]]]:
    out: dict[str, list[tuple[int, ...]]] = {"H": [], "W": []}
    if path.is_file():
        for line in path.read_text().splitlines():
            kind, *marks = line.split()
            if kind in out:
                out[kind].append(tuple(int(v) for v in marks))
    return {k: sorted(v) for k, v in out.items()}


class _Cursor:
    """The first line whose first mark falls inside each successive request's window."""

    def __init__(self, lines: list[tuple[int, ...]]) -> None:
        self.lines, self.j = lines, 0

    def inside(self, c0: int, c1: int) -> tuple[int, ...] | None:
        while self.j < len(self.lines) and self.lines[self.j][0] < c0:
            self.j += 1
        return self.lines[self.j] if self.j < len(self.lines) and self.lines[self.j][0] <= c1 else None


def _us(values: Sequence[float]) -> float:
    return statistics.median(values) / 1000.0


def request_stages(server: Ours, models: Sequence[BenchModel], count: int, stage_log: Path) -> dict:
    """`count` invokes round-robin, one keep-alive connection; each matched to its worker's line."""
    http = Http(server.port)
    client: list[tuple[int, int]] = []
    try:
        for i in range(count):
            m = models[i % len(models)]
            t0 = time.perf_counter_ns()
            status, body = http.call("POST", f"/models/{m.name}/invoke", m.body, {"Content-Type": "text/csv"})
            t1 = time.perf_counter_ns()
            if (problem := check_answer(m, status, body)) is not None:
                raise BenchError(f"breakdown: {problem}")
            client.append((t0, t1))
        pings = []
        for _ in range(min(count, 1000)):
            t0 = time.perf_counter_ns()
            http.call("GET", "/ping")
            pings.append(time.perf_counter_ns() - t0)
    finally:
        http.close()
    lines = stage_log.read_text().splitlines()
    worker = _Cursor(sorted(tuple(int(v) for v in line.split()[1:]) for line in lines
                                 if not line.startswith("load ")))  # load steps: load_breakdown.py
    java = _java_lines(Path(f"{stage_log}.java"))
    heard, dispatched = _Cursor(java["H"]), _Cursor(java["W"])
    rows = JAVA_ROWS if len(java["H"]) >= count * 0.9 and len(java["W"]) >= count * 0.9 else ROWS
    spans: dict[str, list[int]] = {label: [] for label, _, _ in rows}
    totals = []
    for c0, c1 in client:
        # Matched by when the worker got it. Not by "sent": a worker can lose the CPU right after its
        # write, so the client may have the answer first (that request's last span is then negative).
        w = worker.inside(c0, c1)
        if w is None:
            continue  # no worker line inside this request's window (lines lost)
        marks = dict(zip(WORKER_MARKS, w, strict=True))
        marks.update(c0=c0, c1=c1)
        if rows is JAVA_ROWS:
            h, d = heard.inside(c0, c1), dispatched.inside(c0, c1)
            if h is None or d is None:
                continue
            marks.update(zip(("read", "answer"), h, strict=True))
            marks.update(zip(("dispatch", "written", "reply"), d, strict=True))
        for label, start, end in rows:
            spans[label].append(marks[end] - marks[start])
        totals.append(c1 - c0)
    if len(totals) < count * 0.9:
        raise BenchError(f"breakdown: only {len(totals)} of {count} requests matched a worker line")
    return {"requests": len(totals), "total_us": _us(totals), "ping_us": _us(pings),
            "stages_us": {label: _us(v) for label, v in spans.items()}}


def _timed(fn: Callable[[], object], count: int) -> float:
    """Median microseconds of `fn()` over `count` calls."""
    out = []
    for _ in range(count):
        t0 = time.perf_counter_ns()
        fn()
        out.append(time.perf_counter_ns() - t0)
    return _us(out)


def handler_split(models: Sequence[BenchModel], count: int) -> dict[str, float]:
    """The default handler's stages in this process, on the bench's models and bodies (CSV in, JSON out)."""
    from sklearn_mme.handler import defaults
    from sklearn_mme.handler.service import ModelService

    services = [(ModelService.load(m.ours_dir), m.body) for m in models[:5]]
    out: dict[str, list[float]] = {"decode (input_fn)": [], "predict (predict_fn)": [],
                                   "encode (output_fn)": [], "ModelService.invoke, all of it": []}
    for service, body in services:
        data = defaults.input_fn(body, "text/csv")
        pred = defaults.predict_fn(data, service.model)
        out["decode (input_fn)"].append(_timed(lambda b=body: defaults.input_fn(b, "text/csv"), count))
        out["predict (predict_fn)"].append(
            _timed(lambda d=data, s=service: defaults.predict_fn(d, s.model), count))
        out["encode (output_fn)"].append(
            _timed(lambda p=pred: defaults.output_fn(p, "application/json"), count))
        out["ModelService.invoke, all of it"].append(
            _timed(lambda s=service, b=body: s.invoke(b, "text/csv", "application/json"), count))
    return {k: statistics.median(v) for k, v in out.items()}


def _frame(body: bytes) -> bytes:
    """An invoke as MMS's Java front frames it, with the headers a boto3-like client sends."""
    def field(v: bytes) -> bytes:
        return struct.pack("!i", len(v)) + v

    headers = [(b"Host", b"127.0.0.1:8080"), (b"Accept-Encoding", b"identity"),
               (b"Content-Type", b"text/csv"), (b"Accept", b"application/json"),
               (b"Content-Length", str(len(body)).encode()),
               (b"X-Amzn-SageMaker-Target-Model", b"customer_0000.tar.gz")]
    out = b"I" + field(b"0b3d5c2e-6a4f-4f3e-9a55-1c2d3e4f5a6b")
    out += b"".join(field(k) + field(v) for k, v in headers) + struct.pack("!i", -1)
    out += field(b"body") + field(b"text/csv") + field(body) + struct.pack("!i", -1)
    return out + struct.pack("!i", -1)


def frame_path(body: bytes, count: int) -> dict[str, float]:
    """MMS's codec + Service.predict against ours, around a no-op handler, over a real socket pair:
    read the frame, build the context, call the handler, write the answer (microseconds, median)."""
    from mms.protocol.otf_message_handler import retrieve_msg
    from mms.service import Service, emit_metrics

    from sklearn_mme.container.mms_frames import FrameReader
    from sklearn_mme.container.mms_predict import predict

    os.environ.setdefault("MMS_DECODE_INPUT_REQUEST", "false")

    def handle(data, context):
        context.set_response_content_type(0, "application/json")
        return [b'{"predictions":[1]}']

    frame = _frame(body)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    service = Service("m", "/tmp", None, handle, None, 1)
    reader = FrameReader(b)

    # As in a worker: MMS's per-request metric line goes through logging to stdout (here /dev/null).
    sink = open(os.devnull, "w")
    log = logging.getLogger("mms.service")
    handler = logging.StreamHandler(sink)
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False

    def mms() -> None:
        a.sendall(frame)
        b.sendall(service.predict(retrieve_msg(b)[1]))
        emit_metrics(service.context.metrics.store)
        a.recv(65536)

    def ours() -> None:
        a.sendall(frame)
        b.sendall(predict(service, reader.read()[1]))
        a.recv(65536)

    try:
        with a, b:
            return {"MMS 1.1.11 codec + Service.predict + its metric line": _timed(mms, count),
                    "ours (mms_frames + mms_predict)": _timed(ours, count)}
    finally:
        log.removeHandler(handler)
        sink.close()
