"""`--big`: one big model at W = 1, 2, 4 workers (issue 13), and a big model's warm latency (issue 17).

For each W a fresh `container/serve` with SAGEMAKER_MODEL_SERVER_WORKERS=W loads the 60-tree RandomForest
(~13 MB joblib); 8 concurrent clients then invoke it until every worker has answered (each answer names
its worker's pid), so every worker has touched what a predict touches before the memory figure. The figure
is whole-container PSS after load minus PSS idle, both read after 5 s quiet (past the plugin's heap trim),
split into the model's processes and Java. W = 1, 2, 4 per repeat, in an order rotated each repeat; the
table gives medians. At W=1 the same server also loads a 100-tree XGBoost model, and the warm p50 of both
is measured with one keep-alive client.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import threading
import time
from pathlib import Path

import joblib

from bench import report
from bench.client import CSV, BenchError, Http, note
from bench.models import big_forest, big_xgboost, to_csv
from bench.report import MB
from bench.servers import UNLOAD_SETTLE_S, Ours

WORKER_COUNTS = (1, 2, 4)
TARGET_RATIO = 1.2  # issue 13: PSS at W=4 at most 1.2 x PSS at W=1
# The PSS added, split: what the model's processes hold, and what MMS's Java front adds per worker.
ROLE_GROUPS = {"model": ("zygote", "launcher", "worker"), "java": ("java",)}

# Like our default handler's answer, plus the worker's pid so the bench can see every worker answer.
INFERENCE_PY = '''\
import json
import os


def predict_fn(data, model):
    return model.predict(data)


def output_fn(prediction, accept):
    return json.dumps({"pid": os.getpid(), "predictions": prediction.tolist()}), "application/json"
'''


def _write(root: Path, name: str, model: object) -> Path:
    model_dir = root / name
    (model_dir / "code").mkdir(parents=True, exist_ok=True)
    joblib.dump(model, model_dir / "model.joblib")
    (model_dir / "code" / "inference.py").write_text(INFERENCE_PY)
    return model_dir


def _load(http: Http, name: str, model_dir: Path) -> None:
    request = json.dumps({"model_name": name, "url": str(model_dir)}).encode()
    status, body = http.call("POST", "/models", request, {"Content-Type": "application/json"})
    if status != 200:
        raise BenchError(f"loading {name}: {status} {body[:200]!r}")


def _reach_workers(port: int, name: str, body: bytes, expected: list[int], workers: int,
                   timeout_s: float) -> set[int]:
    """Invoke with 8 clients until `workers` distinct workers have answered correctly."""
    pids: set[int] = set()
    errors: list[str] = []
    deadline = time.monotonic() + timeout_s

    def client() -> None:
        http = Http(port)
        try:
            while len(pids) < workers and not errors and time.monotonic() < deadline:
                status, answer = http.call("POST", f"/models/{name}/invoke", body, CSV)
                got = json.loads(answer) if status == 200 else None
                if got is None or got["predictions"] != expected:
                    errors.append(f"{status} {answer[:200]!r}")
                    return
                pids.add(got["pid"])
        finally:
            http.close()

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise BenchError(f"{name}: wrong answer {errors[0]}")
    if len(pids) < workers:
        raise BenchError(f"{name}: only {len(pids)} of {workers} workers answered")
    return pids


def _p50_ms(http: Http, name: str, body: bytes, count: int) -> float:
    times = []
    for _ in range(count):
        t0 = time.perf_counter()
        status, _ = http.call("POST", f"/models/{name}/invoke", body, CSV)
        times.append(time.perf_counter() - t0)
        if status != 200:
            raise BenchError(f"{name}: invoke answered {status}")
    return report.percentile(times, 50) * 1000.0


def _measure(args: argparse.Namespace, workdir: Path, workers: int, forest_dir: Path, body: bytes,
             expected: list[int], booster: tuple[Path, bytes, list[int]] | None) -> dict[str, float]:
    """One fresh server with `workers` workers: PSS the forest adds, split by role (and at W=1 warm p50s)."""
    server = Ours(workdir, extra_env={**args.ours_env, "SAGEMAKER_MODEL_SERVER_WORKERS": str(workers)})
    http = Http(server.port)
    out: dict[str, float] = {}
    try:
        note(f"[bench] big: W={workers}, starting ours on port {server.port}")
        server.start()
        time.sleep(max(args.settle_s, UNLOAD_SETTLE_S))  # Java's start-up garbage trimmed, as after traffic
        idle = server.snapshot()
        _load(http, "forest", forest_dir)
        _reach_workers(server.port, "forest", body, expected, workers, args.phase_timeout)
        # Quiet past our plugin's heap trim (one full GC 3 s after the last request): otherwise the clients'
        # garbage in Java's heap, collected or not when we read, moves the figure by +-20 MB.
        time.sleep(UNLOAD_SETTLE_S)
        loaded = server.snapshot()
        out["pss"] = (loaded.total - idle.total) / MB
        for group, roles in ROLE_GROUPS.items():
            added = (loaded.by_role.get(r, [0, 0])[1] - idle.by_role.get(r, [0, 0])[1] for r in roles)
            out[group] = sum(added) / MB
        if booster is not None:
            booster_dir, xbody, xexpected = booster
            _load(http, "xgboost", booster_dir)
            _reach_workers(server.port, "xgboost", xbody, xexpected, 1, args.phase_timeout)
            count = min(args.invokes, 500)
            out["forest_warm_p50_ms"] = _p50_ms(http, "forest", body, count)
            out["xgboost_warm_p50_ms"] = _p50_ms(http, "xgboost", xbody, count)
    finally:
        http.close()
        server.stop()
    return out


def run_big(args: argparse.Namespace, workdir: Path) -> tuple[str, dict]:
    note("[bench] big: training a 60-tree RandomForest and a 100-tree XGBoost model")
    forest, rows = big_forest()
    booster, xrows = big_xgboost()
    forest_dir = _write(workdir / "models", "forest", forest)
    booster_dir = _write(workdir / "models", "xgboost", booster)
    body, expected = to_csv(rows), [int(p) for p in forest.predict(rows)]
    xbooster = (booster_dir, to_csv(xrows), [int(p) for p in booster.predict(xrows)])
    runs: dict[int, list[dict[str, float]]] = {w: [] for w in WORKER_COUNTS}
    for rep in range(args.repeats):
        # Rotated each repeat, so a drift of the shared machine doesn't favour one worker count.
        order = WORKER_COUNTS[rep % len(WORKER_COUNTS):] + WORKER_COUNTS[:rep % len(WORKER_COUNTS)]
        for workers in order:
            runs[workers].append(_measure(args, workdir / f"big-r{rep}-w{workers}", workers, forest_dir, body,
                                          expected, xbooster if workers == 1 else None))
    metrics: dict[str, float] = {"forest_joblib_mb": (forest_dir / "model.joblib").stat().st_size / MB}
    for workers, measured in runs.items():
        for key in measured[0]:
            name = key if key.endswith("_ms") else f"forest_{key}_w{workers}_mb"
            metrics[name] = statistics.median(m[key] for m in measured)
    last = WORKER_COUNTS[-1]
    ratio = metrics[f"forest_pss_w{last}_mb"] / metrics["forest_pss_w1_mb"]
    model_ratio = metrics[f"forest_model_w{last}_mb"] / metrics["forest_model_w1_mb"]
    metrics["w4_over_w1"] = ratio
    metrics["w4_over_w1_model_processes"] = model_ratio
    targets = {"w4_over_w1": {"target": f"<= {TARGET_RATIO}", "value": ratio, "pass": ratio <= TARGET_RATIO}}
    rows_out = []
    for w in WORKER_COUNTS:
        rows_out.append([f"forest ({metrics['forest_joblib_mb']:.1f} MB joblib): PSS added at W={w} (MB)",
                         f"{metrics[f'forest_pss_w{w}_mb']:.1f}", "", ""])
        split = f"{metrics[f'forest_model_w{w}_mb']:.1f} / {metrics[f'forest_java_w{w}_mb']:.1f}"
        rows_out.append(["  of which model processes (zygote, launchers, workers) / Java", split, "", ""])
    rows_out.append(["PSS at W=4 / PSS at W=1", f"{ratio:.2f}", f"<= {TARGET_RATIO}",
                     "PASS" if targets["w4_over_w1"]["pass"] else "FAIL"])
    rows_out.append(["  model processes only, W=4 / W=1", f"{model_ratio:.2f}", "", ""])
    rows_out.append(["forest (60 trees) warm p50, 20 rows (ms)", f"{metrics['forest_warm_p50_ms']:.2f}",
                     "", ""])
    rows_out.append(["xgboost (100 trees) warm p50, 20 rows (ms)", f"{metrics['xgboost_warm_p50_ms']:.2f}",
                     "", ""])
    per_repeat = "; ".join(f"W={w} [{' '.join(format(m['pss'], '.1f') for m in runs[w])}]"
                           for w in WORKER_COUNTS)
    text = "\n".join([
        "sklearn-mme big-model run (issue 13): one model, W workers; PSS = whole container after load minus "
        "idle, every worker having answered, read after 5 s quiet; medians of "
        f"{args.repeats} repeats; MB = 10^6 bytes",
        f"command: {shlex.join(sys.orig_argv)}",
        "",
        report.format_table(["metric", "ours", "target", "result"], rows_out),
        "",
        f"per repeat, PSS added (MB): {per_repeat}",
    ])
    return text, {"mode": "big", "command": shlex.join(sys.orig_argv), "metrics": metrics, "targets": targets,
                  "repeats": {str(w): runs[w] for w in WORKER_COUNTS}}
