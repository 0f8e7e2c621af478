"""`python -m bench --slow-neighbour`: what one slow model costs the other models of its host.

One host (MME_BACKEND=hosts, MME_HOSTS=1) serves N small models and one whose predict takes SLOW_MS. A client
invokes the small models round-robin on one keep-alive connection while the slow model is idle, then while a
second client keeps the slow model busy: once with MME_HOST_SLOW_MS=0 (it stays in the host, and the small
models wait behind it) and once with the container's default (it moves to a process of its own after 5
requests). The small models' p50/p99 in each case, same run.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
import time
from pathlib import Path

from bench import report
from bench.client import MMS, BenchError, Http, Latencies, load_all, note, verify_all, warm_latency
from bench.models import BenchModel, make_models
from bench.report import ms
from bench.servers import Ours
from sklearn_mme.container.settings import HOST_SLOW_MS

SLOW_MS = 50
SLOW_PY = f"""
import time

def predict_fn(data, model):
    time.sleep({SLOW_MS / 1000})
    return model.predict(data)
"""


def _slow_model(root: Path) -> BenchModel:
    base = make_models(root / "slow", 1, with_vanilla=False, progress=False)[0]
    (base.ours_dir / "code").mkdir(exist_ok=True)
    (base.ours_dir / "code" / "inference.py").write_text(SLOW_PY)
    return BenchModel("slow_model", base.ours_dir, base.vanilla_dir, base.body, base.expected)


def _keep_busy(port: int, model: BenchModel, stop: threading.Event, answers: list[int]) -> None:
    http = Http(port)
    try:
        while not stop.is_set():
            status, _ = http.call(*MMS.invoke(model))
            answers.append(status)
    finally:
        http.close()


def _measure(args: argparse.Namespace, workdir: Path, label: str, env: dict[str, str],
             models: list[BenchModel], slow: BenchModel, count: int) -> tuple[Latencies, Latencies, int]:
    server = Ours(workdir / label, backend="hosts", extra_env={**args.ours_env, "MME_HOSTS": "1", **env})
    http = Http(server.port)
    try:
        note(f"[bench] slow-neighbour ({label}): starting ours-hosts on port {server.port}")
        server.start()
        run = load_all(http, [*models, slow], "ours", f"{label}: load", time.monotonic() + args.phase_timeout)
        if run.stopped:
            raise BenchError(f"{label}: loads stopped: {run.stopped}")
        verify_all(http, [*models, slow], f"{label}: verify")
        deadline = time.monotonic() + args.phase_timeout
        quiet = warm_latency(http, models, count, deadline, f"{label}: neighbours, slow model idle")
        stop, answers = threading.Event(), []
        busy = threading.Thread(target=_keep_busy, args=(server.port, slow, stop, answers), daemon=True)
        busy.start()
        try:
            loaded = warm_latency(http, models, count, deadline, f"{label}: neighbours, slow model busy")
        finally:
            stop.set()
            busy.join(30)
        if any(status != 200 for status in answers):
            raise BenchError(f"{label}: the slow model answered {sorted(set(answers))}")
        return quiet, loaded, len(answers)
    finally:
        http.close()
        server.stop()


def run_slow_neighbour(args: argparse.Namespace, workdir: Path) -> tuple[str, dict]:
    n = args.models if args.models != 50 else 10
    count = min(args.invokes, 2000)
    models = make_models(workdir / "models", n, with_vanilla=False)
    slow = _slow_model(workdir / "models")
    cases = {"never moves (MME_HOST_SLOW_MS=0)": {"MME_HOST_SLOW_MS": "0"},
             f"moves (default, {HOST_SLOW_MS.default} ms)": {}}
    metrics, rows = {}, []
    quiet_all: list[float] = []
    for label, env in cases.items():
        key = "never" if env else "default"
        quiet, loaded, slow_answers = _measure(args, workdir, key, env, models, slow, count)
        for lat in (quiet, loaded):
            if lat.errors or lat.wrong:
                raise BenchError(f"{label}: {lat.errors} errors, {lat.wrong} wrong answers")
        quiet_all += quiet.seconds
        metrics[key] = {"busy_p50_ms": ms(loaded.seconds, 50), "busy_p99_ms": ms(loaded.seconds, 99),
                        "quiet_p50_ms": ms(quiet.seconds, 50), "quiet_p99_ms": ms(quiet.seconds, 99),
                        "slow_model_answers": slow_answers}
        rows.append([f"slow model busy, {label}", f"{metrics[key]['busy_p50_ms']:.2f}",
                     f"{metrics[key]['busy_p99_ms']:.2f}", str(slow_answers)])
    rows.insert(0, ["slow model idle (both servers)", f"{ms(quiet_all, 50):.2f}", f"{ms(quiet_all, 99):.2f}",
                    "0"])
    text = "\n".join([
        f"sklearn-mme slow-neighbour run (issue 13): one host, {n} small models and one whose predict sleeps "
        f"{SLOW_MS} ms; {count} invokes of the small models round-robin per case, one keep-alive connection; "
        f"a second client keeps the slow model busy",
        f"command: {shlex.join(sys.orig_argv)}",
        "",
        report.format_table(["small models' latency", "p50 (ms)", "p99 (ms)", "slow model answers"], rows),
    ])
    return text, {"mode": "slow-neighbour", "command": shlex.join(sys.orig_argv), "metrics": metrics}
