"""Traffic traces: read a user's (CSV or JSON lines), or generate a synthetic one (Zipf, bursty, diurnal).

A trace is a list of requests, each with its offset in seconds from the trace's start, its TargetModel and
optionally a body and content type. In a file, each row has `TargetModel` (or `target_model`, `model`) and
either `timestamp` (seconds: epoch or relative; only differences count) or nothing, in which case the
rows are spaced evenly at `rate` requests per second. Optional columns: `body`, `content_type`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PATTERNS = ("zipf", "bursty", "diurnal")
_MODEL_COLUMNS = ("TargetModel", "target_model", "model")


class TraceError(ValueError):
    """The trace cannot be used; the message names the file and the row."""


@dataclass(frozen=True)
class TraceRequest:
    at: float  # seconds from the trace's start
    model: str
    body: str | None = None
    content_type: str | None = None


def _rows(path: Path) -> Iterable[tuple[int, dict]]:
    """(line number, row) from a CSV with a header, or from JSON lines (chosen by the first character)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeError) as err:
        raise TraceError(f"cannot read trace {path}: {err}") from None
    if text.lstrip().startswith("{"):
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as err:
                raise TraceError(f"{path}:{number}: not a JSON object ({err})") from None
            if not isinstance(row, dict):
                raise TraceError(f"{path}:{number}: not a JSON object")
            yield number, row
        return
    reader = csv.DictReader(text.splitlines())
    for number, row in enumerate(reader, 2):
        yield number, row


def _row_request(path: Path, number: int, row: dict) -> tuple[float | None, TraceRequest]:
    model = next((row[c] for c in _MODEL_COLUMNS if row.get(c) not in (None, "")), None)
    if not isinstance(model, str):
        raise TraceError(f"{path}:{number}: no TargetModel (columns: {', '.join(_MODEL_COLUMNS)})")
    raw = row.get("timestamp")
    at: float | None = None
    if raw not in (None, ""):
        try:
            at = float(raw)
        except (TypeError, ValueError):
            raise TraceError(f"{path}:{number}: timestamp {raw!r} is not a number of seconds") from None
        if not math.isfinite(at):
            raise TraceError(f"{path}:{number}: timestamp {raw!r} is not a number of seconds")
    body = row.get("body")
    if body is not None and not isinstance(body, str):
        body = json.dumps(body)  # a JSON trace may carry the body as JSON
    return at, TraceRequest(0.0, model, body or None, row.get("content_type") or None)


def read_trace(path: Path, rate: float | None = None) -> list[TraceRequest]:
    """The trace in `path`, sorted by time, offsets from its first request. Without timestamps the rows
    are `1/rate` seconds apart (TraceError when `rate` is not given then)."""
    path = Path(path)
    stamped: list[tuple[float | None, TraceRequest]] = [_row_request(path, n, r) for n, r in _rows(path)]
    if not stamped:
        raise TraceError(f"{path}: the trace has no requests")
    with_time = sum(at is not None for at, _ in stamped)
    if with_time not in (0, len(stamped)):
        raise TraceError(f"{path}: some rows have a timestamp and some do not")
    if with_time == 0:
        if rate is None or rate <= 0:
            raise TraceError(f"{path}: the trace has no timestamps; give its rate (requests per second)")
        times = [i / rate for i in range(len(stamped))]
    else:
        times = [float(at) for at, _ in stamped]  # type: ignore[arg-type]
    order = sorted(range(len(stamped)), key=lambda i: times[i])  # stable: ties keep file order
    first = times[order[0]]
    return [
        TraceRequest(times[i] - first, stamped[i][1].model, stamped[i][1].body, stamped[i][1].content_type)
        for i in order
    ]


def write_trace(path: Path, trace: list[TraceRequest]) -> None:
    """CSV with a header (timestamp, TargetModel, and body / content_type when any request has one)."""
    extra = [c for c in ("body", "content_type") if any(getattr(r, c) for r in trace)]
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "TargetModel", *extra])
        for r in trace:
            writer.writerow([f"{r.at:.6f}", r.model, *(getattr(r, c) or "" for c in extra)])


# ---- synthetic traces -------------------------------------------------------------------------------------


def zipf_weights(models: int, s: float) -> np.ndarray:
    """P(model i) proportional to 1 / (i+1)^s: model 0 the most popular."""
    weights = 1.0 / np.arange(1, models + 1, dtype=float) ** s
    return weights / weights.sum()


def _arrivals(pattern: str, requests: int, rate: float, rng: np.random.Generator,
              burst_factor: float, period: float | None) -> np.ndarray:
    """Arrival times of a Poisson process whose rate follows the pattern."""
    if pattern == "zipf":
        return np.cumsum(rng.exponential(1.0 / rate, requests))
    if pattern == "bursty":
        # Calm stretches at `rate` and bursts at burst_factor x rate, alternating, ~25 requests each.
        times, t, burst = [], 0.0, False
        while len(times) < requests:
            phase_rate = rate * burst_factor if burst else rate
            for _ in range(int(rng.poisson(25)) + 1):
                t += rng.exponential(1.0 / phase_rate)
                times.append(t)
            burst = not burst
        return np.asarray(times[:requests])
    # diurnal: the rate follows a day's sine (peak 1.9x, trough 0.1x the mean) over `period` seconds; made
    # by thinning a Poisson process at the peak rate.
    span = period or requests / rate
    peak = rate * 1.9
    times, t = [], 0.0
    while len(times) < requests:
        t += rng.exponential(1.0 / peak)
        wanted = rate * (1.0 + 0.9 * math.sin(2 * math.pi * t / span - math.pi / 2))
        if rng.random() < wanted / peak:
            times.append(t)
    return np.asarray(times)


def generate(
    pattern: str,
    models: list[str],
    requests: int,
    rate: float,
    zipf_s: float = 1.0,
    seed: int = 0,
    burst_factor: float = 5.0,
    period: float | None = None,
) -> list[TraceRequest]:
    """A synthetic trace: model popularity Zipf(s) over `models` (in the given order, first = most popular),
    arrivals Poisson at `rate` per second (`zipf`), calm stretches at `rate` alternating with bursts at
    `burst_factor` x `rate` (`bursty`) or a day-shaped rate over
    `period` seconds (`diurnal`). The same arguments give the same trace."""
    if pattern not in PATTERNS:
        raise TraceError(f"unknown pattern {pattern!r} (use one of {', '.join(PATTERNS)})")
    if not models or requests < 1 or rate <= 0:
        raise TraceError("a trace needs at least one model, one request and a positive rate")
    rng = np.random.default_rng(seed)
    times = _arrivals(pattern, requests, rate, rng, burst_factor, period)
    picks = rng.choice(len(models), size=requests, p=zipf_weights(len(models), zipf_s))
    start = float(times[0])
    pairs = zip(times, picks, strict=True)
    return [TraceRequest(round(float(t) - start, 6), models[int(i)]) for t, i in pairs]
