"""The benchmark's command line and the order of its phases (see bench/README.md)."""

from __future__ import annotations

import argparse
import faulthandler
import json
import os
import shlex
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from bench import report
from bench.big import run_big
from bench.chart import PssCurve, median_curve, write_chart
from bench.client import BenchError, Http, load_all, note, throughput, unload_all, verify_all, warm_latency
from bench.interleave import TIMING_KEYS, interleaved_timing
from bench.latency import run_latency
from bench.load_breakdown import run_load_breakdown
from bench.models import BenchModel, make_models
from bench.procmem import ROLES, role_delta_per_model
from bench.reload import run_reload
from bench.report import MB, ms
from bench.scale import run_scale
from bench.servers import UNLOAD_SETTLE_S, layout, make_server, remove_dir, wait_processes
from bench.slow_neighbour import run_slow_neighbour

SERVER_KINDS = ("ours", "vanilla", "ours-fresh", "ours-hosts", "mlserver", "mlserver-inproc")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--models", type=int, default=None, help="N distinct small models (default 50; quick 3)")
    p.add_argument("--repeats", type=int, default=None, help="fresh servers per repeat; medians (default 3)")
    p.add_argument("--invokes", type=int, default=None, help="warm invokes for latency (default 2000)")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients for throughput")
    p.add_argument("--duration", type=float, default=None, help="seconds of throughput load (default 5)")
    p.add_argument("--max-requests", type=int, default=40_000, help="cap on throughput requests")
    p.add_argument("--timing", choices=("interleaved", "sequential"), default="interleaved",
                   help="warm latency and throughput: all servers up in alternating windows (fair on a busy "
                        "machine), or each server alone right after its memory figures")
    p.add_argument("--rounds", type=int, default=None,
                   help="alternating windows per server (default 10; quick 2)")
    p.add_argument("--servers", default=None,
                   help="comma list of ours,vanilla,ours-fresh,ours-hosts,mlserver,mlserver-inproc (default "
                        "all; quick: ours,vanilla); mlserver runs from a venv the bench creates once "
                        "(see README)")
    p.add_argument("--quick", action="store_true", help="smoke mode: 3 models, 1 repeat, few invokes")
    p.add_argument("--scale", type=int, default=None, metavar="M",
                   help="instead: load M models into ours only; report total PSS and load times")
    p.add_argument("--big", action="store_true",
                   help="instead: one big model (60-tree forest) at 1, 2, 4 workers; PSS and warm p50")
    p.add_argument("--latency", action="store_true",
                   help="instead: the warm path (issue 19): ours' per-stage breakdown, then latency and "
                        "throughput (8/32 clients, all models and one hot model) beside the peers")
    p.add_argument("--load-breakdown", action="store_true",
                   help="instead: N cold loads into ours (MME_BACKEND=hosts unless --ours-env says), the "
                        "median time of each step of a load (plugin, launcher, zygote, host), DELETE p50")
    p.add_argument("--reload", action="store_true",
                   help="instead: MME_BACKEND=hosts, a budget of a few models: reload p50 of evicted models")
    p.add_argument("--slow-neighbour", action="store_true",
                   help="instead: one host, small models and a slow one: the small models' latency while the "
                        "slow one is busy, with MME_HOST_SLOW_MS=0 and with its default")
    p.add_argument("--scale-timeout", type=float, default=900.0, help="time budget of the scale loads (s)")
    p.add_argument("--scale-max-gb", type=float, default=12.0,
                   help="stop the scale loads once the container's PSS passes this (GB)")
    p.add_argument("--phase-timeout", type=float, default=600.0, help="time budget per phase (s)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    p.add_argument("--chart", type=Path, default=None, metavar="PNG",
                   help="write a chart of whole-container PSS against models loaded, per server (matplotlib)")
    p.add_argument("--workdir", type=Path, default=None, help="where models, configs and logs go (temp dir)")
    p.add_argument("--keep", action="store_true", help="keep the work dir (server logs) afterwards")
    p.add_argument("--strict", action="store_true", help="exit 3 when a target of issue 4 fails")
    p.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE",
                   help="extra environment for container/serve (e.g. MME_JAVA_OPTS=...), repeatable")
    args = p.parse_args(argv)
    quick = args.quick
    args.models = args.models or (3 if quick else 50)
    args.repeats = args.repeats or (1 if quick else 3)
    args.invokes = args.invokes or (60 if quick else 2000)
    args.duration = args.duration or (1.0 if quick else 5.0)
    args.servers = [s.strip() for s in (args.servers or ("ours,vanilla" if quick else ",".join(SERVER_KINDS)))
                    .split(",") if s.strip()]
    args.settle_s = 0.3 if quick else 1.5
    args.rounds = args.rounds or (2 if quick else 10)
    bad_env = [e for e in args.ours_env if "=" not in e]
    if bad_env:
        p.error(f"--ours-env wants KEY=VALUE, got {bad_env[0]!r}")
    args.ours_env = dict(e.split("=", 1) for e in args.ours_env)
    unknown = set(args.servers) - set(SERVER_KINDS)
    if unknown or "ours" not in args.servers:
        p.error(f"--servers must include ours and only name {', '.join(SERVER_KINDS)}")
    if min(args.models, args.repeats, args.invokes, args.clients, args.rounds) < 1 or args.duration <= 0:
        p.error("counts and durations must be positive")
    return args


def measure(kind: str, models: list[BenchModel], args: argparse.Namespace, workdir: Path, tag: str) -> dict:
    """One fresh server through every phase; returns its metrics and diagnostics."""
    server = make_server(kind, workdir, args.ours_env)
    http = Http(server.port)
    n = len(models)
    try:
        note(f"[bench] {tag}: starting {server.label} on port {server.port}")
        server.start()
        # The baseline in the state the after-unload figure is read in: past our plugin's full GC (HeapTrim,
        # 3 s after the last activity), which a reading 1.5 s after /ping missed (Java 111 against 78 MB).
        time.sleep(max(args.settle_s, UNLOAD_SETTLE_S))
        idle = server.snapshot()
        proto = server.protocol
        curve = PssCurve(server, n)  # whole-tree PSS every few loads, for --chart
        load_run = load_all(http, models, layout(kind), f"{tag}: load", time.monotonic() + args.phase_timeout,
                            stop_when=curve.sample, proto=proto)
        if load_run.stopped:
            raise BenchError(f"{server.label}: {load_run.stopped}")
        loads = load_run.seconds
        curve.sample(len(loads))
        verify_all(http, models, f"{tag}: verify", proto)  # also warms every worker before the memory figure
        loaded = server.snapshot()
        lat = warm_latency(http, models, args.invokes, time.monotonic() + args.phase_timeout,
                           f"{tag}: invoke", proto)
        fresh = warm_latency(http, models, args.invokes, time.monotonic() + args.phase_timeout,
                             f"{tag}: invoke, new connections", proto, new_connection=True)
        note(f"[bench] {tag}: {args.clients} clients for {args.duration:g}s")
        load_avg = os.getloadavg()[0]
        cpu0 = server.cpu_seconds()
        tp = throughput(server.port, models, args.clients, args.duration, args.max_requests, proto)
        cpu = server.cpu_seconds() - cpu0
        # Idle through the throughput window: a server may have closed it (MLServer's uvicorn after 5 s),
        # and the unloads are sent without a retry.
        http.close()
        unloads = unload_all(http, models, f"{tag}: unload", time.monotonic() + args.phase_timeout, proto)
        wait_processes(server, idle.count, timeout_s=30)
        # Memory settles once idle: our plugin runs one full GC 3 s after the last request (HeapTrim.java),
        # and only then gives its heap back. Wait past that for every server alike.
        time.sleep(max(args.settle_s, UNLOAD_SETTLE_S))
        after = server.snapshot()
    finally:
        http.close()
        server.stop()
    if not lat.seconds or not fresh.seconds:
        raise BenchError(f"{server.label}: no warm invoke succeeded")
    per_model = (loaded.total - idle.total) / n / MB
    metrics = {
        "startup_s": server.startup_s,
        "cold_load_p50_ms": ms(loads, 50), "cold_load_p95_ms": ms(loads, 95),
        "idle_pss_mb": idle.total / MB, "loaded_pss_mb": loaded.total / MB,
        "pss_per_model_mb": per_model,
        "pss_slope_mb": per_model if (slope := curve.slope()) is None else slope,
        "warm_p50_ms": ms(lat.seconds, 50), "warm_p99_ms": ms(lat.seconds, 99),
        "warm_newconn_p50_ms": ms(fresh.seconds, 50), "warm_newconn_p99_ms": ms(fresh.seconds, 99),
        "throughput_rps": tp.requests_per_s,
        "cpu_per_request_ms": cpu / max(tp.ok, 1) * 1000.0,
        "unload_p50_ms": ms(unloads, 50),
        "unloaded_pss_mb": after.total / MB,
        "unload_vs_idle_pct": (after.total - idle.total) / idle.total * 100.0,
    }
    return {
        "metrics": metrics,
        "breakdown": role_delta_per_model(idle, loaded, n, after),
        "processes": {"idle": idle.count, "loaded": loaded.count, "unloaded": after.count},
        "errors": {"invoke_errors": lat.errors + fresh.errors, "wrong_answers": lat.wrong + fresh.wrong,
                   "throughput_errors": tp.errors, "throughput_ok": tp.ok},
        "pss_curve": curve.points,
        "leftover_processes": server.leftovers,
        "killed_after_stop": server.killed,
        "load_average_at_throughput": load_avg,
    }


def add_interleaved(seq: dict[str, dict], order: list[str], models: list[BenchModel],
                    args: argparse.Namespace, workdir: Path, tag: str) -> None:
    """Replace each server's warm-latency and throughput figures by those of the interleaved windows."""
    # All servers at once need the sum of what each took alone (known from this repeat), plus room.
    need = sum(seq[k]["metrics"]["loaded_pss_mb"] for k in order) * MB + 1_500 * MB
    if psutil.virtual_memory().available < need:
        note(f"[bench] {tag}: not enough free memory for every server at once ({need / MB:.0f} MB); "
             "keeping the one-at-a-time timing figures")
        for kind in order:
            seq[kind]["timing_mode"] = "sequential (too little memory for interleaved)"
        return
    timings = interleaved_timing(order, models, args, workdir, tag)
    for kind, t in timings.items():
        run = seq[kind]
        run["sequential_timing"] = {k: run["metrics"][k] for k in TIMING_KEYS}
        run["metrics"].update(t.metrics())
        run["timing_mode"] = "interleaved"
        run["load_average_at_throughput"] = statistics.median(t.load_averages)
        run["errors"].update(interleaved_invoke_errors=t.invoke_errors,
                             interleaved_wrong_answers=t.wrong_answers,
                             interleaved_throughput_errors=t.throughput_errors, interleaved_ok=t.ok)
        run["killed_after_stop"] = run["killed_after_stop"] + t.killed_after_stop
        run["leftover_processes"] = run["leftover_processes"] + t.leftover_processes


def median_breakdown(runs: list[dict]) -> dict[str, dict[str, float]]:
    roles = {role for r in runs for role in r["breakdown"]}
    out = {}
    for role in sorted(roles, key=lambda x: ROLES.index(x) if x in ROLES else len(ROLES)):
        entries = [r["breakdown"][role] for r in runs if role in r["breakdown"]]
        out[role] = {k: statistics.median(e[k] for e in entries) for k in entries[0]}
    return out


def run_compare(args: argparse.Namespace, workdir: Path) -> tuple[str, dict]:
    models = make_models(workdir / "models", args.models, with_vanilla="vanilla" in args.servers)
    runs: dict[str, list[dict]] = {kind: [] for kind in args.servers}
    orders = []
    for rep in range(args.repeats):
        # Rotate the order each repeat, so a slow drift of the shared machine doesn't favour one server.
        order = args.servers[rep % len(args.servers):] + args.servers[:rep % len(args.servers)]
        orders.append(order)
        of = f"{rep + 1}/{args.repeats}"
        seq = {kind: measure(kind, models, args, workdir / f"{kind}-{rep + 1}", f"{kind} {of}")
               for kind in order}
        if args.timing == "interleaved":
            add_interleaved(seq, order, models, args, workdir / f"timing-{rep + 1}", f"timing {of}")
        for kind in order:
            runs[kind].append(seq[kind])
    med = {kind: report.medians([r["metrics"] for r in rs]) for kind, rs in runs.items()}
    targets = report.evaluate_targets(med["ours"], med.get("vanilla"))
    breakdowns = {kind: median_breakdown(rs) for kind, rs in runs.items()}
    curves = {kind: median_curve([r["pss_curve"] for r in rs]) for kind, rs in runs.items()}
    if args.chart:
        write_chart(args.chart, curves, f"Whole-container PSS while loading {args.models} small models one "
                                        f"by one (median of {args.repeats} repeat(s))")
    lines = [
        f"sklearn-mme benchmark (issue 4): N={args.models} distinct small models, {args.repeats} repeat(s), "
        "medians; fresh servers every repeat",
        f"command: {shlex.join(sys.orig_argv)}",
        f"warm invokes: {args.invokes} round-robin, 1 keep-alive client; throughput: {args.clients} "
        f"keep-alive clients for {args.duration:g}s; MB = 10^6 bytes; PSS summed over the whole process tree",
        _timing_line(args),
        "ratio (after each peer's column): peer/ours for times and memory, ours/peer for throughput "
        "(above 1 = ours better)",
        "ours = container/serve (zygote forks); vanilla = multi-model-server launcher + sagemaker-inference "
        "handler + code/inference.py"
        + ("; ours-fresh = container/serve with MME_BACKEND=vanilla" if "ours-fresh" in runs else "")
        + ("; ours-hosts = container/serve with MME_BACKEND=hosts" if "ours-hosts" in runs else "")
        + ("; mlserver = MLServer 1.7.1 + mlserver-sklearn, its default parallel_workers"
           if "mlserver" in runs else "")
        + ("; mlserver-inproc = the same with parallel_workers=0" if "mlserver-inproc" in runs else ""),
        "",
        report.comparison_table(med, targets),
        "",
        "where the memory goes (median per additional model, by process role):",
        report.breakdown_table(breakdowns),
        "",
        "checks: " + "; ".join(_check_line(kind, rs) for kind, rs in runs.items()),
        *(_spread_line(key, runs) for key in ("throughput_rps", "warm_p50_ms", "cold_load_p50_ms")),
        _load_line(runs),
    ]
    result = {
        "mode": "compare", "command": shlex.join(sys.orig_argv), "n_models": args.models,
        "repeats": args.repeats, "invokes": args.invokes, "clients": args.clients,
        "duration_s": args.duration, "timing": args.timing, "rounds": args.rounds,
        "order_per_repeat": orders,
        "servers": {kind: {"median": med[kind], "repeats": rs, "breakdown_per_model": breakdowns[kind],
                           "pss_curve": curves[kind], "verified": True} for kind, rs in runs.items()},
        "ratios": {m.key: report.ratio(m, med["ours"][m.key], med["vanilla"][m.key])
                   for m in report.METRICS if "vanilla" in med},
        # Above 1 = ours better, against every other server of the run.
        "ratios_vs": {peer: {m.key: report.ratio(m, med["ours"][m.key], med[peer][m.key])
                             for m in report.METRICS} for peer in med if peer != "ours"},
        "targets": targets,
    }
    return "\n".join(lines), result


def _check_line(kind: str, runs: list[dict]) -> str:
    errors = sum(v for r in runs for k, v in r["errors"].items() if k.endswith("errors"))
    wrong = sum(v for r in runs for k, v in r["errors"].items() if k.endswith("wrong_answers"))
    left = sum(len(r["leftover_processes"]) for r in runs)
    killed = sum(len(r["killed_after_stop"]) for r in runs)
    return (f"{kind}: all models answered correctly before measuring, {errors} request errors, "
            f"{wrong} wrong answers, {killed} processes outlived the server's own stop (SIGKILLed), "
            f"{left} left running")


def _timing_line(args: argparse.Namespace) -> str:
    if args.timing == "interleaved":
        return (f"timing rows (warm invoke, throughput, CPU/request): every server up at once, {args.rounds} "
                "alternating windows each, so the shared machine's load hits all columns alike; memory, cold "
                "load and unload rows: one server at a time")
    return "all rows: one server at a time (--timing sequential)"


def _spread_line(key: str, runs: dict[str, list[dict]]) -> str:
    """Every repeat's value of one metric: the medians hide how noisy the shared machine was."""
    metric = next(m for m in report.METRICS if m.key == key)
    per = ", ".join(f"{kind} [{' '.join(metric.fmt.format(r['metrics'][key]) for r in rs)}]"
                    for kind, rs in runs.items())
    return f"per repeat, {metric.label}: {per}"


def _load_line(runs: dict[str, list[dict]]) -> str:
    """How busy the shared machine was: a low throughput next to a high load average is noise."""
    per = ", ".join(f"{kind} [{' '.join(format(r['load_average_at_throughput'], '.1f') for r in rs)}]"
                    for kind, rs in runs.items())
    return f"per repeat, machine load average (1 min) as throughput began ({os.cpu_count()} cores): {per}"


def _raise_interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGHUP take the same path as Ctrl-C: unwind, and every `finally` stops its server.
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 PID`: where is it stuck?
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="mme-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    failed = True
    try:
        if args.big:
            text, result = run_big(args, workdir)
        elif args.latency:
            text, result = run_latency(args, workdir)
        elif args.reload:
            text, result = run_reload(args, workdir)
        elif args.slow_neighbour:
            text, result = run_slow_neighbour(args, workdir)
        elif args.load_breakdown:
            text, result = run_load_breakdown(args, workdir)
        else:
            text, result = run_scale(args, workdir) if args.scale else run_compare(args, workdir)
        failed = False
    except (BenchError, RuntimeError, OSError) as exc:  # a server failed to start, load or answer
        print(f"bench: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench: interrupted; servers stopped", file=sys.stderr)
        return 130
    finally:
        if args.keep or failed or args.workdir is not None:
            print(f"bench: work dir (models, configs, server logs) kept at {workdir}", file=sys.stderr)
        else:
            remove_dir(workdir)
    wall = time.perf_counter() - t0
    result["wall_s"] = wall
    result["table"] = text
    print(text)
    print(f"wall time: {wall:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str) + "\n")
    failing = [k for k, t in result.get("targets", {}).items() if t["pass"] is False]
    return 3 if args.strict and failing else 0
