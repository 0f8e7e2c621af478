"""`mme-local trace`, `replay` and `size`: synthetic traces, replaying a trace against an endpoint of real
containers, and picking the cheapest endpoint configuration for it."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from sklearn_mme.harness.cli_options import SIZE, HarnessOptions, fail, harness_options, instances_options

if TYPE_CHECKING:
    from sklearn_mme.harness.endpoint import Endpoint
    from sklearn_mme.harness.replay_report import ReplayReport
    from sklearn_mme.harness.trace import TraceRequest


@click.command("trace")
@click.option("--pattern", type=click.Choice(["zipf", "bursty", "diurnal"]), default="zipf",
              show_default=True,
              help="zipf: Poisson arrivals; bursty: calm stretches and bursts; diurnal: a day-shaped rate.")
@click.option("--models", type=click.IntRange(min=1), default=50, show_default=True, help="Distinct models.")
@click.option("--requests", "count", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--rate", type=click.FloatRange(min=0.001), default=10.0, show_default=True,
              help="Mean requests per second (bursts go higher).")
@click.option("--zipf-s", type=click.FloatRange(min=0.0), default=1.0, show_default=True,
              help="Popularity skew: model i gets 1/(i+1)^s of the traffic (0: uniform).")
@click.option("--burst-factor", type=click.FloatRange(min=1.0), default=5.0, show_default=True,
              help="bursty: the rate in a burst, times --rate.")
@click.option("--period", type=click.FloatRange(min=1.0), default=None,
              help="diurnal: seconds of one 'day' (default: the whole trace).")
@click.option("--key-template", default="model-{i:03d}.tar.gz", show_default=True,
              help="TargetModel of model i (0 = most popular).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True)
def trace_cmd(pattern: str, models: int, count: int, rate: float, zipf_s: float, burst_factor: float,
              period: float | None, key_template: str, seed: int, output: Path) -> None:
    """Write a synthetic trace (CSV: timestamp, TargetModel) for replay or size."""
    from sklearn_mme.harness.trace import TraceError, generate, write_trace

    try:
        keys = [key_template.format(i=i) for i in range(models)]
    except (KeyError, IndexError, ValueError) as err:
        fail(f"--key-template {key_template!r} does not format with i: {err}")
    if len(set(keys)) != len(keys):
        fail(f"--key-template {key_template!r} gives the same key to different models; use {{i}}")
    try:
        trace = generate(pattern, keys, count, rate, zipf_s, seed, burst_factor, period)
        write_trace(output, trace)
    except (TraceError, OSError) as err:
        fail(str(err))
    click.echo(f"{output}: {count} requests over {trace[-1].at:.1f}s, {models} models ({pattern})")


def pacing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """The options that say how a trace is replayed."""
    options = [
        click.argument("trace_path", metavar="TRACE", type=click.Path(exists=True, dir_okay=False,
                                                                      path_type=Path)),
        click.option("--speed", type=click.FloatRange(min=0.01), default=1.0, show_default=True,
                     help="Times the trace's own pace (10: ten times faster)."),
        click.option("--rate", type=click.FloatRange(min=0.001), default=None,
                     help="Requests per second, for a trace without timestamps."),
        click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True,
                     help="Most requests under way at once (a request that finds all busy goes late)."),
        click.option("--body", default=None, help="Body of requests whose trace row has none."),
        click.option("--content-type", default="text/csv", show_default=True,
                     help="Content type of requests whose trace row has none."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _read(trace_path: Path, rate: float | None, body: str | None) -> list[TraceRequest]:
    from sklearn_mme.harness.trace import TraceError, read_trace

    try:
        trace = read_trace(trace_path, rate)
    except TraceError as err:
        fail(str(err))
    if body is None and any(r.body is None for r in trace):
        fail(f"{trace_path}: some requests have no body; give one with --body")
    return trace


def _endpoint(options: HarnessOptions, instances: int, hot_rate: float,
              env: dict[str, str] | None = None) -> Endpoint:
    from sklearn_mme.harness.container import RuntimeStartError, free_port
    from sklearn_mme.harness.endpoint import Endpoint
    from sklearn_mme.harness.store import StoreError

    try:
        endpoint = Endpoint(options.config(free_port()), instances, hot_rate, env)
        endpoint.start()
    except (ValueError, StoreError) as err:
        fail(str(err))
    except RuntimeStartError as err:
        fail(f"a container did not start: {err}")
    return endpoint


def _replay(url: str, trace: list[TraceRequest], speed: float, concurrency: int, body: str | None,
            content_type: str) -> ReplayReport:
    from sklearn_mme.harness import replay_report
    from sklearn_mme.harness.replay import replay

    result = replay(url, trace, speed, concurrency, (body or "").encode(), content_type)
    return replay_report.build(result)


@click.command("replay")
@pacing_options
@harness_options
@instances_options
@click.option("--endpoint-url", default=None,
              help="Replay against this running endpoint instead of starting one (harness options ignored).")
@click.option("--chart", type=click.Path(dir_okay=False, path_type=Path), default=Path("replay.png"),
              show_default=True, help="Where to write the chart (PNG): hit rate and p99 latency over time.")
def replay_cmd(trace_path: Path, speed: float, rate: float | None, concurrency: int, body: str | None,
               content_type: str, harness: HarnessOptions, instances: int, hot_rate: float,
               endpoint_url: str | None, chart: Path) -> None:
    """Replay TRACE (CSV or JSON lines: timestamp, TargetModel, optional body) against real containers and
    report hit rate, loads, evictions, 507s and latency per model and per instance."""
    from sklearn_mme.harness import replay_chart, replay_report

    trace = _read(trace_path, rate, body)
    running = None
    if endpoint_url is None:
        running = _endpoint(harness, instances, hot_rate)
        endpoint_url = running.url
        click.echo(f"endpoint on {endpoint_url}: {running.describe_container()}", err=True)
    try:
        report = _replay(endpoint_url, trace, speed, concurrency, body, content_type)
    finally:
        if running is not None:
            running.stop()
    click.echo(f"replay of {trace_path} ({len(trace)} requests, {len({r.model for r in trace})} models) on "
               f"{endpoint_url if running is None else f'{instances} instance(s)'}")
    click.echo(replay_report.table(report))
    try:
        replay_chart.draw(report.result.sent, chart, f"replay of {trace_path.name}")
    except OSError as err:
        fail(f"cannot write the chart {chart}: {err.strerror or err}")
    click.echo(f"chart: {chart}")
    if report.total.errors:
        errors = [s for s in report.result.sent if not s.ok]
        for s in errors[:5]:
            click.echo(f"error: {s.model}: {s.error}", err=True)
        sys.exit(1)


@click.command("size")
@pacing_options
@harness_options
@click.option("--instance-types", required=True,
              help="Comma-separated candidates, e.g. ml.m5.large,ml.r5.large.")
@click.option("--max-instances", type=click.IntRange(1, 16), default=1, show_default=True,
              help="Each type is tried with 1 .. this many instances.")
@click.option("--p99-ms", type=click.FloatRange(min=0.0, min_open=True), default=1000.0, show_default=True,
              help="Target: p99 latency of the whole replay, client side, load waits included.")
@click.option("--min-hit-rate", type=click.FloatRange(0, 100), default=90.0, show_default=True,
              help="Target: percent of answered requests whose model was loaded already.")
@click.option("--max-error-rate", type=click.FloatRange(0, 100), default=0.0, show_default=True,
              help="Target: percent of requests that may fail.")
@click.option("--reserve", type=SIZE, default="1GiB", show_default=True,
              help="Memory of an instance not available to models (OS, agents, the container itself).")
@click.option("--hot-rate", type=click.FloatRange(min=0.1), default=20.0, show_default=True,
              help="As for serve --hot-rate.")
def size_cmd(trace_path: Path, speed: float, rate: float | None, concurrency: int, body: str | None,
             content_type: str, harness: HarnessOptions, instance_types: str, max_instances: int,
             p99_ms: float, min_hit_rate: float, max_error_rate: float, reserve: int,
             hot_rate: float) -> None:
    """Replay TRACE on each instance type x 1..--max-instances and print the cheapest configuration that
    meets the p99 and hit-rate target, with the evidence."""
    from sklearn_mme.harness import sizing
    from sklearn_mme.harness.units import format_size

    trace = _read(trace_path, rate, body)
    types = [t.strip() for t in instance_types.split(",") if t.strip()]
    try:
        cands = sizing.candidates(types, max_instances, reserve)
    except sizing.SizingError as err:
        fail(str(err))
    target = sizing.Target(p99_ms, min_hit_rate / 100, max_error_rate / 100)
    run = functools.partial(_run_candidate, harness, hot_rate, trace, speed, concurrency, body, content_type)
    trials = sizing.evaluate(cands, reserve, target, run)
    inputs = {
        "trace": f"{trace_path} ({len(trace)} requests, {len({r.model for r in trace})} models, "
                 f"{trace[-1].at:.1f}s)",
        "replay": f"{speed:g}x the trace's pace, at most {concurrency} requests at once",
        "candidates": f"{', '.join(dict.fromkeys(types))} x 1..{max_instances} instances",
        "target": f"p99 <= {p99_ms:g} ms, hit rate >= {min_hit_rate:g}%, errors <= {max_error_rate:g}%",
        "reserve": f"{format_size(reserve)} per instance (model budget = memory - reserve)",
        "model store": harness.model_store,
        "routing": f"hot above {hot_rate:g} requests/s per instance holding a model",
    }
    chosen = sizing.pick(trials)
    click.echo(sizing.report(inputs, trials, chosen))
    sys.exit(0 if chosen is not None else 1)


def _run_candidate(harness: HarnessOptions, hot_rate: float, trace: list[TraceRequest], speed: float,
                   concurrency: int, body: str | None, content_type: str, candidate: Any,
                   budget: int) -> ReplayReport:
    click.echo(f"size: replaying on {candidate.label} (model budget {budget} bytes per instance)", err=True)
    endpoint = _endpoint(harness, candidate.count, hot_rate, {"MME_MEMORY_BUDGET": str(budget)})
    try:
        return _replay(endpoint.url, trace, speed, concurrency, body, content_type)
    finally:
        endpoint.stop()
