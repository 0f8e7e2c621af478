"""`python -m bench --reload`: what a request costs when its model was evicted from a host's cache.

One container with MME_BACKEND=hosts and a memory budget of about four small models; N (default 20) models are
registered. Invoking them round-robin makes every request a miss: the model was evicted since its last
request, so it is loaded again from its local directory (no download) before it answers. Invoking the same
three models round-robin makes every request a hit. Both on one keep-alive connection, same server, same
minute: the difference of the p50s is the reload's cost.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

from bench import report
from bench.client import BenchError, Http, load_all, note, unload_all, verify_all, warm_latency
from bench.models import make_models
from bench.report import ms
from bench.servers import Ours
from sklearn_mme.container.examples import small_model
from sklearn_mme.handler.sizing import measure_bytes

FITS = 4  # models the budget holds
HOT = 3  # models of the all-hits pass (fewer than FITS: they stay cached)
RELOAD_TARGET_MS = 5.0


def run_reload(args: argparse.Namespace, workdir: Path) -> tuple[str, dict]:
    n = max(args.models if args.models != 50 else 20, FITS + 2)
    models = make_models(workdir / "models", n, with_vanilla=False)
    budget = measure_bytes(small_model(0).model) * FITS
    env = {"MME_HOSTS": "1", **args.ours_env, "MME_MEMORY_BUDGET": str(budget)}
    server = Ours(workdir / "ours-reload", backend="hosts", extra_env=env)
    http = Http(server.port)
    count = min(args.invokes, 2000)
    try:
        note(f"[bench] reload: starting ours-hosts on port {server.port} (budget {budget} bytes)")
        server.start()
        run = load_all(http, models, "ours", "reload: load", time.monotonic() + args.phase_timeout)
        if run.stopped or len(run.seconds) != n:
            raise BenchError(f"ours-hosts: loads stopped: {run.stopped}")
        verify_all(http, models, "reload: verify")
        deadline = time.monotonic() + args.phase_timeout
        misses = warm_latency(http, models, count, deadline, "reload: every request a reload")
        hits = warm_latency(http, models[:HOT], count, deadline, "reload: every request a hit")
        misses2 = warm_latency(http, models, count, deadline, "reload: every request a reload, again")
        unload_all(http, models, "reload: unload", time.monotonic() + args.phase_timeout)
    finally:
        http.close()
        server.stop()
    if misses.errors or misses.wrong or hits.errors or hits.wrong or misses2.errors or misses2.wrong:
        raise BenchError(f"ours-hosts: errors or wrong answers (misses {misses.errors}/{misses.wrong}, "
                         f"hits {hits.errors}/{hits.wrong})")
    miss_s = misses.seconds + misses2.seconds
    metrics = {
        "models": n, "budget_bytes": budget, "cold_load_p50_ms": ms(run.seconds, 50),
        "miss_p50_ms": ms(miss_s, 50), "miss_p99_ms": ms(miss_s, 99),
        "hit_p50_ms": ms(hits.seconds, 50), "hit_p99_ms": ms(hits.seconds, 99),
    }
    metrics["reload_p50_ms"] = metrics["miss_p50_ms"] - metrics["hit_p50_ms"]
    ok = metrics["reload_p50_ms"] <= RELOAD_TARGET_MS
    rows = [
        ["cold load p50, POST /models (ms)", f"{metrics['cold_load_p50_ms']:.1f}", "", ""],
        ["invoke p50 / p99, model cached (ms)", f"{metrics['hit_p50_ms']:.2f} / {metrics['hit_p99_ms']:.2f}",
         "", ""],
        ["invoke p50 / p99, model evicted (ms)",
         f"{metrics['miss_p50_ms']:.2f} / {metrics['miss_p99_ms']:.2f}", "", ""],
        ["reload p50: evicted minus cached (ms)", f"{metrics['reload_p50_ms']:.2f}",
         f"<= {RELOAD_TARGET_MS:g}", "PASS" if ok else "FAIL"],
    ]
    text = "\n".join([
        f"sklearn-mme reload run (issue 13): {n} small models registered with MME_BACKEND=hosts, a budget of "
        f"{budget} bytes (~{FITS} models); {count} invokes round-robin over all (each a reload) twice, and "
        f"over {HOT} (each a hit)",
        f"command: {shlex.join(sys.orig_argv)}",
        "",
        report.format_table(["metric", "ours-hosts", "target", "result"], rows),
    ])
    return text, {"mode": "reload", "command": shlex.join(sys.orig_argv), "metrics": metrics,
                  "targets": {"reload_p50_ms": {"target": f"<= {RELOAD_TARGET_MS:g}",
                                                "value": metrics["reload_p50_ms"], "pass": ok}}}
