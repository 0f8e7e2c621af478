"""`python -m bench --scale N`: N small models into ours only (vanilla would need ~46 GB for 500), then
total PSS, load times, warm latency and what unloading gives back."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench import report
from bench.client import BenchError, Http, Latencies, load_all, note, unload_all, verify_all, warm_latency
from bench.models import make_models
from bench.procmem import Snapshot, role_delta_per_model
from bench.report import MB, ms
from bench.servers import UNLOAD_SETTLE_S, Ours, Server, wait_processes

SCALE_TARGET_BYTES = 8_000 * MB
# --scale also reads it later: Java's heap shrinks at its next periodic GC, which a burst of hundreds of
# unloads can push past the first reading.
SCALE_LATE_SETTLE_S = 30.0


def _scale_guard(server: Server, max_bytes: float) -> Callable[[int], str | None]:
    def stop_when(i: int) -> str | None:
        if psutil.virtual_memory().available < 2_000 * MB:
            return "the machine has under 2 GB available"
        if i and i % 50 == 0 and (total := server.snapshot(settled=False).total) > max_bytes:
            return f"the container's PSS reached {total / MB:.0f} MB"
        return None

    return stop_when


@dataclass
class _Measured:
    server: Server
    idle: Snapshot
    loaded: Snapshot
    after: Snapshot
    after_late: Snapshot
    loads: list[float]
    n: int
    lat: Latencies
    unloads: list[float]
    stopped: str | None


def _measure(args: argparse.Namespace, workdir: Path) -> _Measured:
    models = make_models(workdir / "models", args.scale, with_vanilla=False)
    server = Ours(workdir / "ours-scale", extra_env=args.ours_env)
    http = Http(server.port)
    tag = f"scale {args.scale}"
    try:
        note(f"[bench] {tag}: starting ours on port {server.port}")
        server.start()
        time.sleep(max(args.settle_s, UNLOAD_SETTLE_S))  # past HeapTrim's GC, as the after-unload figures
        idle = server.snapshot()
        guard = _scale_guard(server, args.scale_max_gb * 1000 * MB)
        deadline = time.monotonic() + args.scale_timeout
        load_run = load_all(http, models, "ours", f"{tag}: load", deadline, guard)
        loads = load_run.seconds
        loaded_models = models[: len(loads)]
        if not loaded_models:
            raise BenchError("no model loaded")
        verify_all(http, loaded_models, f"{tag}: verify")
        loaded = server.snapshot()
        lat = warm_latency(http, loaded_models, min(args.invokes, 2000),
                           time.monotonic() + args.phase_timeout, f"{tag}: invoke")
        unloads = unload_all(http, loaded_models, f"{tag}: unload", time.monotonic() + args.phase_timeout)
        wait_processes(server, idle.count, timeout_s=60)
        time.sleep(max(args.settle_s, UNLOAD_SETTLE_S))
        after = server.snapshot()
        time.sleep(SCALE_LATE_SETTLE_S - UNLOAD_SETTLE_S)
        after_late = server.snapshot()
    finally:
        http.close()
        server.stop()
    return _Measured(server, idle, loaded, after, after_late, loads, len(loaded_models), lat, unloads,
                     load_run.stopped)


def run_scale(args: argparse.Namespace, workdir: Path) -> tuple[str, dict]:
    """Many models into ours only: total PSS and load times; the report's text and its JSON."""
    m = _measure(args, workdir)
    server, idle, loaded, after, after_late = m.server, m.idle, m.loaded, m.after, m.after_late
    loads, n, lat, unloads = m.loads, m.n, m.lat, m.unloads
    metrics = {
        "models_loaded": n, "startup_s": server.startup_s,
        "cold_load_p50_ms": ms(loads, 50), "cold_load_p95_ms": ms(loads, 95),
        "idle_pss_mb": idle.total / MB, "loaded_pss_mb": loaded.total / MB,
        "pss_per_model_mb": (loaded.total - idle.total) / n / MB,
        "warm_p50_ms": ms(lat.seconds, 50), "warm_p99_ms": ms(lat.seconds, 99),
        "unload_p50_ms": ms(unloads, 50), "unloaded_pss_mb": after.total / MB,
        "unload_vs_idle_pct": (after.total - idle.total) / idle.total * 100.0,
        "unload_vs_idle_late_pct": (after_late.total - idle.total) / idle.total * 100.0,
        "processes_loaded": loaded.count,
    }
    return _report(args, m, metrics)


def _report(args: argparse.Namespace, m: _Measured, metrics: dict) -> tuple[str, dict]:
    server, idle, loaded, after, lat, n = m.server, m.idle, m.loaded, m.after, m.lat, m.n
    stopped = m.stopped
    all_loaded = n == args.scale
    targets = {
        "models_loaded": {"target": f"all {args.scale}", "value": n, "pass": all_loaded},
        "loaded_pss_mb": {"target": f"< 8000 with {args.scale} loaded", "value": metrics["loaded_pss_mb"],
                          "pass": all_loaded and loaded.total < SCALE_TARGET_BYTES},
        "cold_load_p50_ms": {"target": "<= 100", "value": metrics["cold_load_p50_ms"],
                             "pass": metrics["cold_load_p50_ms"] <= 100.0},
        "unload_vs_idle_pct": {"target": "within 10%", "value": metrics["unload_vs_idle_pct"],
                               "pass": abs(metrics["unload_vs_idle_pct"]) <= 10.0},
        "unload_vs_idle_late_pct": {"target": "within 10%", "value": metrics["unload_vs_idle_late_pct"],
                                    "pass": abs(metrics["unload_vs_idle_late_pct"]) <= 10.0},
    }
    rows = [
        ("models loaded", f"{n} of {args.scale}", "models_loaded"),
        ("startup to first /ping (s)", f"{metrics['startup_s']:.2f}", ""),
        ("cold load p50 (ms)", f"{metrics['cold_load_p50_ms']:.1f}", "cold_load_p50_ms"),
        ("cold load p95 (ms)", f"{metrics['cold_load_p95_ms']:.1f}", ""),
        ("PSS idle, 0 models (MB)", f"{metrics['idle_pss_mb']:.1f}", ""),
        (f"PSS with {n} models loaded (MB)", f"{metrics['loaded_pss_mb']:.1f}", "loaded_pss_mb"),
        ("PSS per additional model (MB)", f"{metrics['pss_per_model_mb']:.2f}", ""),
        ("processes with all loaded", f"{loaded.count}", ""),
        ("warm invoke p50 (ms)", f"{metrics['warm_p50_ms']:.2f}", ""),
        ("warm invoke p99 (ms)", f"{metrics['warm_p99_ms']:.2f}", ""),
        ("unload p50, DELETE (ms)", f"{metrics['unload_p50_ms']:.1f}", ""),
        ("PSS after unloading all (MB)", f"{metrics['unloaded_pss_mb']:.1f}", ""),
        (f"after unload vs idle, {UNLOAD_SETTLE_S:.0f} s later (%)", f"{metrics['unload_vs_idle_pct']:+.1f}",
         "unload_vs_idle_pct"),
        (f"after unload vs idle, {SCALE_LATE_SETTLE_S:.0f} s later (%)",
         f"{metrics['unload_vs_idle_late_pct']:+.1f}", "unload_vs_idle_late_pct"),
    ]
    table = report.format_table(
        ["metric", "ours", "target", "result"],
        [[label, value, targets[key]["target"] if key else "",
          ("PASS" if targets[key]["pass"] else "FAIL") if key else ""] for label, value, key in rows],
    )
    breakdown = role_delta_per_model(idle, loaded, n, after)
    text = "\n".join([
        f"sklearn-mme scale run (issue 4): {args.scale} distinct small models into ours only, loaded one "
        f"after another, one invoke each; MB = 10^6 bytes; PSS summed over the whole process tree",
        f"command: {shlex.join(sys.orig_argv)}",
        "",
        table,
        "",
        "where the memory goes (per additional model, by process role):",
        report.breakdown_table({"ours": breakdown}),
        "",
        f"checks: all {n} models answered correctly; {lat.errors} request errors, {lat.wrong} wrong answers, "
        f"{len(server.killed)} processes outlived the server's own stop (SIGKILLed), "
        f"{len(server.leftovers)} left running",
        *([f"loads stopped early: {stopped}"] if stopped else []),
    ])
    result = {"mode": "scale", "command": shlex.join(sys.orig_argv), "requested": args.scale,
              "stopped_early": stopped, "metrics": metrics, "targets": targets,
              "breakdown_per_model": breakdown, "leftover_processes": server.leftovers,
              "killed_after_stop": server.killed}
    return text, result


