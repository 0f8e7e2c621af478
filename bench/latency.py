"""`--latency`: the warm path (issue 19). Where one request's time goes in ours (bench/breakdown.py), then
ours beside vanilla MMS and MLServer: warm latency over keep-alive and new connections, and throughput
with 8 and 32 keep-alive clients over every model and on one hot model (W=1; W=2 for the MMS stacks).

All servers of a repeat are up at once and measured in alternating windows (as bench/interleave.py), so
the shared machine's load falls on every column alike; figures are medians over repeats.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bench import breakdown, report
from bench.client import BenchError, Http, load_all, model_workers, note, throughput, verify_all, warm_latency
from bench.models import BenchModel, make_models
from bench.servers import Ours, Server, layout, make_server, vanilla_properties

CLIENTS = (8, 32)
HOT_W2 = ("ours", "vanilla")  # MMS stacks: workers per model is theirs to set; MLServer has no such knob


def _start(kind: str, models: Sequence[BenchModel], args: argparse.Namespace, workdir: Path,
           workers: int = 1, extra_env: dict[str, str] | None = None) -> tuple[Server, Http]:
    env = {**args.ours_env, **(extra_env or {})}
    if workers > 1:
        env["SAGEMAKER_MODEL_SERVER_WORKERS"] = str(workers)
    server = make_server(kind, workdir, env)
    if kind == "vanilla" and workers > 1:
        server.config.write_text(vanilla_properties(server.port).replace(  # type: ignore[attr-defined]
            "default_workers_per_model=1", f"default_workers_per_model={workers}"))
    http = Http(server.port)
    note(f"[bench] latency: starting {server.label} (W={workers}) on port {server.port}")
    server.start()
    run = load_all(http, models, layout(kind), f"load {kind}", time.monotonic() + args.phase_timeout,
                   proto=server.protocol)
    if run.stopped:
        server.stop()
        raise BenchError(f"{server.label}: {run.stopped}")
    verify_all(http, models, f"verify {kind}", server.protocol)
    return server, http


def _windows(servers: dict[str, tuple[Server, Http]], models: Sequence[BenchModel],
             args: argparse.Namespace, latency: bool, hot_only: bool, suffix: str = "") -> dict[str, dict]:
    """args.rounds rounds; each server in turn gets its latency and throughput windows per round."""
    acc: dict[str, dict[str, list[float]]] = {k: {} for k in servers}
    kinds = list(servers)
    per_round = max(1, args.invokes // args.rounds)
    window_s = args.duration / args.rounds
    for rnd in range(args.rounds):
        for kind in kinds[rnd % len(kinds):] + kinds[:rnd % len(kinds)]:
            server, http = servers[kind]
            a = acc[kind]
            http.close()
            http.call(*server.protocol.invoke(models[0]))  # connect before any clock starts
            if latency:
                for fresh, key in ((False, "keepalive"), (True, "newconn")):
                    lat = warm_latency(http, models, per_round, time.monotonic() + args.phase_timeout,
                                       f"round {rnd + 1} {kind} {key}", server.protocol,
                                       new_connection=fresh)
                    if lat.errors or lat.wrong:
                        raise BenchError(f"{kind}: {lat.errors} errors, {lat.wrong} wrong answers")
                    a.setdefault(key, []).extend(lat.seconds)
            spreads = (("hot", models[:1]),) if hot_only else (("many", models), ("hot", models[:1]))
            for spread, targets in spreads:
                for clients in CLIENTS:
                    tp = throughput(server.port, targets, clients, window_s, args.max_requests,
                                    server.protocol)
                    key = f"rps_{spread}_{clients}{suffix}"
                    a.setdefault(key + "_ok", []).append(tp.ok)
                    a.setdefault(key + "_s", []).append(tp.elapsed_s)
                    a.setdefault(key + "_err", []).append(tp.errors)
    out = {}
    for kind, a in acc.items():
        m: dict[str, float] = {}
        for key in ("keepalive", "newconn"):
            if key in a:
                m[f"{key}_p50_ms"] = report.percentile(a[key], 50) * 1000
                m[f"{key}_p99_ms"] = report.percentile(a[key], 99) * 1000
        for key in {k.rsplit("_", 1)[0] for k in a if k.startswith("rps_")}:
            m[key] = sum(a[key + "_ok"]) / sum(a[key + "_s"])
            m[key + "_errors"] = sum(a[key + "_err"])
        out[kind] = m
    return out


def _phase(kinds: Sequence[str], models: Sequence[BenchModel], args: argparse.Namespace, workdir: Path,
           workers: int, **kw: object) -> dict[str, dict]:
    servers: dict[str, tuple[Server, Http]] = {}
    try:
        for kind in kinds:
            servers[kind] = _start(kind, models, args, workdir / f"{kind}-w{workers}", workers)
        return _windows(servers, models, args, **kw)  # type: ignore[arg-type]
    finally:
        for server, http in servers.values():
            http.close()
            server.stop()


def _policy_phase(models: Sequence[BenchModel], args: argparse.Namespace, workdir: Path) -> dict[str, float]:
    """The hot model's throughput in ours with the worker-count policy on (its default: from 1 worker up
    to one per core) and off (MME_MAX_WORKERS_PER_MODEL=1), both up at once in alternating windows."""
    servers: dict[str, tuple[Server, Http]] = {}
    try:
        for label, extra in (("on", {}), ("off", {"MME_MAX_WORKERS_PER_MODEL": "1"})):
            servers[label] = _start("ours", models, args, workdir / f"ours-policy-{label}", 1, extra)
        got = _windows(servers, models, args, latency=False, hot_only=True)
        workers = {label: model_workers(http, models[0].name) for label, (_, http) in servers.items()}
    finally:
        for server, http in servers.values():
            http.close()
            server.stop()
    out: dict[str, float] = {}
    for label, m in got.items():
        for clients in CLIENTS:
            out[f"rps_hot_{clients}_policy_{label}"] = m[f"rps_hot_{clients}"]
            out[f"rps_hot_{clients}_policy_{label}_errors"] = m[f"rps_hot_{clients}_errors"]
        out[f"hot_workers_policy_{label}"] = workers[label]
    return out


def run_breakdown(models: Sequence[BenchModel], args: argparse.Namespace, workdir: Path) -> dict:
    stage_log = workdir / "stages.log"
    # The default backend (shared hosts) unless --ours-env says otherwise.
    server = Ours(workdir / "ours-stages", backend="hosts",
                  extra_env={**args.ours_env, "MME_STAGE_LOG": str(stage_log)})
    http = Http(server.port)
    try:
        server.start()
        run = load_all(http, models, "ours", "load ours (stages)", time.monotonic() + args.phase_timeout)
        if run.stopped:
            raise BenchError(f"ours: {run.stopped}")
        verify_all(http, models, "verify ours (stages)")
        http.close()
        stage_log.write_text("")  # only the measured requests
        Path(f"{stage_log}.java").write_text("")  # the Java front's marks (JavaStages.java)
        result = breakdown.request_stages(server, models, args.invokes, stage_log)
    finally:
        http.close()
        server.stop()
    result["handler_us"] = breakdown.handler_split(models, 2000)
    result["frame_path_us"] = breakdown.frame_path(models[0].body, 5000)
    return result


ROWS = (  # key, label, format, kind for the ratio ("time": lower is better, "rate": higher is better)
    ("keepalive_p50_ms", "warm p50, keep-alive (ms)", "{:.2f}", "time"),
    ("keepalive_p99_ms", "warm p99, keep-alive (ms)", "{:.2f}", "time"),
    ("newconn_p50_ms", "warm p50, new connection (ms)", "{:.2f}", "time"),
    ("newconn_p99_ms", "warm p99, new connection (ms)", "{:.2f}", "time"),
    ("rps_many_8", "req/s, 8 clients, all models", "{:,.0f}", "rate"),
    ("rps_many_32", "req/s, 32 clients, all models", "{:,.0f}", "rate"),
    ("rps_hot_8", "req/s, 8 clients, one model, W=1", "{:,.0f}", "rate"),
    ("rps_hot_32", "req/s, 32 clients, one model, W=1", "{:,.0f}", "rate"),
    ("rps_hot_8_w2", "req/s, 8 clients, one model, W=2", "{:,.0f}", "rate"),
    ("rps_hot_32_w2", "req/s, 32 clients, one model, W=2", "{:,.0f}", "rate"),
    ("rps_hot_8_policy_on", "req/s, 8 clients, one model, worker policy on", "{:,.0f}", "rate"),
    ("rps_hot_8_policy_off", "req/s, 8 clients, one model, worker policy off", "{:,.0f}", "rate"),
    ("rps_hot_32_policy_on", "req/s, 32 clients, one model, worker policy on", "{:,.0f}", "rate"),
    ("rps_hot_32_policy_off", "req/s, 32 clients, one model, worker policy off", "{:,.0f}", "rate"),
    ("hot_workers_policy_on", "the hot model's workers after, policy on", "{:.0f}", "rate"),
)


def peer_table(med: dict[str, dict[str, float]]) -> str:
    kinds = list(med)
    header = ["metric"] + [c for k in kinds for c in ((k,) if k == "ours" else (k, "ratio"))]
    rows = []
    for key, label, fmt, kind in ROWS:
        cells = [label]
        ours = med["ours"].get(key)
        for k in kinds:
            value = med[k].get(key)
            cells.append("-" if value is None else fmt.format(value))
            if k != "ours":
                r = None if not value or not ours else (value / ours if kind == "time" else ours / value)
                cells.append("-" if r is None else f"{r:.2f}x")
        rows.append(cells)
    return report.format_table(header, rows)


def breakdown_text(b: dict) -> str:
    total = b["total_us"]
    rows = [[label, f"{us:,.0f}", f"{us / total * 100:.0f}%"] for label, us in b["stages_us"].items()]
    rows.append(["whole request, client-side (median)", f"{total:,.0f}", "100%"])
    rows.append(["GET /ping on the same connection (Java front's HTTP floor)", f"{b['ping_us']:,.0f}", ""])
    lines = [f"one warm invoke through ours, {b['requests']} requests (medians per stage, microseconds):",
             report.format_table(["stage", "us", "share"], rows), "",
             "inside the handler, in-process, same models and bodies (median us):"]
    lines += [f"  {k:40s} {v:8.1f}" for k, v in b["handler_us"].items()]
    lines += ["MMS frame + request handling around a no-op handler, socket pair, in-process (median us):"]
    lines += [f"  {k:55s} {v:8.1f}" for k, v in b["frame_path_us"].items()]
    return "\n".join(lines)


def run_latency(args: argparse.Namespace, workdir: Path) -> tuple[str, dict]:
    models = make_models(workdir / "models", args.models, with_vanilla="vanilla" in args.servers)
    note("[bench] latency: stage breakdown of ours")
    stages = [run_breakdown(models, args, workdir / f"stages-{r}") for r in range(args.repeats)]
    best = sorted(stages, key=lambda b: b["total_us"])[len(stages) // 2]  # the median repeat's breakdown
    runs: dict[str, list[dict]] = {k: [] for k in args.servers}
    loads = []
    for rep in range(args.repeats):
        order = args.servers[rep % len(args.servers):] + args.servers[:rep % len(args.servers)]
        loads.append(os.getloadavg()[0])
        w1 = _phase(order, models, args, workdir / f"rep{rep}", 1, latency=True, hot_only=False)
        # W=2 is only asked of the hot model: load just that one (vanilla at W=2 would double its memory).
        w2 = _phase([k for k in order if k in HOT_W2], models[:1], args, workdir / f"rep{rep}", 2,
                    latency=False, hot_only=True, suffix="_w2")
        policy = _policy_phase(models[:1], args, workdir / f"rep{rep}") if "ours" in order else {}
        for kind in order:
            runs[kind].append({**w1[kind], **w2.get(kind, {}), **(policy if kind == "ours" else {})})
    med = {k: {key: statistics.median(r[key] for r in rs if key in r) for key in rs[0] | rs[-1]}
           for k, rs in runs.items()}
    errors = {k: sum(v for r in rs for key, v in r.items() if key.endswith("_errors"))
              for k, rs in runs.items()}
    text = "\n".join([
        f"sklearn-mme warm path (issue 19): N={args.models} small models, {args.repeats} repeat(s), medians",
        f"command: {shlex.join(sys.orig_argv)}",
        f"machine load average (1 min) at each repeat's start: {' '.join(f'{x:.1f}' for x in loads)} "
        f"({os.cpu_count()} cores)",
        "",
        breakdown_text(best),
        "",
        f"peers: all up at once, {args.rounds} alternating windows per repeat; latency {args.invokes} "
        "invokes "
        f"round-robin on one connection; throughput {args.duration:g}s per row, keep-alive clients; "
        "ratio: peer/ours for times, ours/peer for req/s (above 1 = ours better)",
        peer_table(med),
        "per repeat, warm p50 keep-alive: " + ", ".join(
            f"{k} [{' '.join(format(r['keepalive_p50_ms'], '.2f') for r in rs)}]"
            for k, rs in runs.items()),
        "throughput request errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()),
    ])
    return text, {"mode": "latency", "command": shlex.join(sys.orig_argv), "breakdown": stages,
                  "servers": {k: {"median": med[k], "repeats": rs} for k, rs in runs.items()},
                  "load_averages": loads, "targets": {}}
