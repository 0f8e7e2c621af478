"""`python -m bench --load-breakdown`: where one cold load's time goes, step by step (issue 13).

Ours is started with MME_STAGE_LOG and MME_BACKEND=hosts (or `--ours-env MME_BACKEND=...`): our MMS plugin
(LoadClock.java), the zygote and the host each append "load STAGE NANOS MODEL" when a model's load passes a
step (CLOCK_MONOTONIC, the clock of the bench's perf_counter_ns). The bench POSTs each of N models in turn,
as SageMaker does, takes its own stamps around each request, and prints the median of every span between
consecutive steps, then the DELETE p50. Steps a backend never passes (the zygote mode has no host) are left
out of its rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from collections import defaultdict
from pathlib import Path

from bench.client import JSON, BenchError, Http, note, unload_all
from bench.models import make_models
from bench.report import ms
from bench.servers import Ours

# In the order a load passes them: c0/c1 are the bench's own stamps around the POST.
STEPS = (
    ("c0", "client sends POST /models"),
    ("j_backend_start", "HTTP in, MMS reads the model dir and registers the name"),
    ("j_spare_handed", "a spare launcher is handed the model's command (MME_SPARE_LAUNCHERS)"),
    ("z_registered", "MMS starts the launcher (Runtime.exec); it registers with the zygote"),
    ("z_handshake", "the zygote binds the model's socket and writes the handshake"),
    ("j_backend_up", "MMS reads 'MMS worker started.' from the launcher's stdout"),
    ("j_workers", "MMS registers the name; the plugin starts the load"),
    ("j_connect", "a worker thread is created and starts"),
    ("z_accepted", "MMS connects to the model's socket, the zygote accepts"),
    ("z_handed", "the zygote hands the connection to a host"),
    ("h_frame", "the host adopts it and reads MMS's load frame"),
    ("h_load_in", "the host starts the load"),
    ("h_load_out", "load: joblib.load, measure, ledger, ModelCache"),
    ("h_sent", "the host writes the answer"),
    ("j_loaded", "MMS reads the answer, the plugin settles the load"),
    ("c1", "HTTP 200 out, the client reads it"),
)


def read_marks(path: Path) -> dict[str, dict[str, int]]:
    """model -> step -> first nanosecond stamp, from the stage log's `load` lines."""
    marks: dict[str, dict[str, int]] = defaultdict(dict)
    for line in path.read_text().splitlines():
        parts = line.split(" ", 3)
        if len(parts) == 4 and parts[0] == "load":
            marks[parts[3]].setdefault(parts[1], int(parts[2]))
    return marks


def spans(marks: dict[str, dict[str, int]]) -> list[tuple[str, str, float, int]]:
    """(step, label, median ms, mean ms) of each span between consecutive steps every load passed."""
    names = [step for step, _ in STEPS]
    present = [s for s in names if marks and all(s in m for m in marks.values())]
    if "z_handshake" not in present:
        # The C launcher tells MMS the model started as it registers: the zygote reads the registration
        # beside the load's chain, while MMS goes on (its time falls in the spans around it).
        present = [s for s in present if s != "z_registered"]
    rows = []
    for a, b in zip(present, present[1:], strict=False):
        values = [(m[b] - m[a]) / 1e6 for m in marks.values()]
        rows.append((b, dict(STEPS)[b], statistics.median(values), statistics.fmean(values)))
    return rows


def run_load_breakdown(args: argparse.Namespace, workdir: Path) -> tuple[str, dict]:
    """`--repeats` rounds of loading `--models` models one after another and deleting them, in one server:
    the first round runs on a fresh JVM (its code not yet compiled), the others as a server that has
    been loading for a while does; the table is over the later rounds (the only one with `--repeats 1`)."""
    n, rounds = args.models, args.repeats
    models = make_models(workdir / "models", n, with_vanilla=False)
    stage_log = workdir / "stages.log"
    env = {"MME_BACKEND": "hosts", **args.ours_env, "MME_STAGE_LOG": str(stage_log)}
    server = Ours(workdir / "ours-load-stages", backend=env.pop("MME_BACKEND"), extra_env=env)
    http = Http(server.port)
    client: list[dict[str, dict[str, int]]] = [{} for _ in range(rounds)]
    unloads: list[list[float]] = []
    try:
        note(f"[bench] load breakdown: starting {server.label} on port {server.port}")
        server.start()
        time.sleep(args.settle_s)
        for r in range(rounds):
            for m in models:
                name = f"{m.name}_r{r}"  # a name per round: the stage log is keyed by it
                body = json.dumps({"model_name": name, "url": str(m.ours_dir)}).encode()
                c0 = time.perf_counter_ns()
                status, text = http.call("POST", "/models", body, JSON, retry=False)
                c1 = time.perf_counter_ns()
                if status != 200:
                    raise BenchError(f"{server.label}: loading {name} answered {status}: {text[:200]!r}")
                client[r][name] = {"c0": c0, "c1": c1}
            renamed = [dataclasses.replace(m, name=f"{m.name}_r{r}") for m in models]
            unloads.append(unload_all(http, renamed, f"load breakdown: unload, round {r + 1}",
                                      time.monotonic() + args.phase_timeout))
    finally:
        http.close()
        server.stop()
    marks = read_marks(stage_log)
    later = client[1:] or client
    for loads in later:
        for name, stamps in loads.items():
            marks[name].update(stamps)
    names = {name for loads in later for name in loads}
    rows = spans({k: v for k, v in marks.items() if k in names})
    whole = [(v["c1"] - v["c0"]) / 1e6 for loads in later for v in loads.values()]
    per_round = [statistics.median((v["c1"] - v["c0"]) / 1e6 for v in loads.values()) for loads in client]
    deletes = [t for times in unloads[1:] or unloads for t in times]
    total = statistics.median(whole)
    mean = statistics.fmean(whole)
    width = max(len(label) for _, label, _, _ in rows) if rows else 40
    which = f"rounds 2-{rounds}" if rounds > 1 else "one round"
    # Medians of the steps do not add up to the median load; means do (a slow load is slow somewhere).
    lines = [f"one cold load through {server.label}, {n} models one after another ({which}), ms per step:",
             f"{'':<{width}}  median    mean  of mean"]
    for _, label, med, avg in rows:
        lines.append(f"{label:<{width}}  {med:6.2f}  {avg:6.2f}  {100 * avg / mean:6.0f}%")
    lines.append(f"{'whole POST /models, client-side':<{width}}  {total:6.2f}  {mean:6.2f}    100%")
    lines.append(f"{'DELETE /models/{name}, client-side':<{width}}  {ms(deletes, 50):6.2f}  "
                 f"{1000 * statistics.fmean(deletes):6.2f}")
    lines.append("POST p50 per round (the first on a fresh JVM): " + " ".join(f"{v:.2f}" for v in per_round))
    result = {"server": server.label, "models": n, "rounds": rounds, "load_p50_ms": total,
              "load_p50_ms_per_round": per_round, "unload_p50_ms": ms(deletes, 50), "load_mean_ms": mean,
              "steps_ms": {step: {"median": med, "mean": avg} for step, _, med, avg in rows}, "targets": {}}
    return "\n".join(lines), result
