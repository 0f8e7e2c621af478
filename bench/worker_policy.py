"""The worker-count policy's threshold (issue 13): `python -m bench.worker_policy`.

One container per MME_SCALE_UP_WAIT_MS value, plus one with the policy off (MME_MAX_WORKERS_PER_MODEL=1),
all up at once and measured in alternating windows (as bench/interleave.py), so the machine's load falls on
each alike. First traffic that needs no extra worker (clients spread over all models), then one hot model.
Per server: workers the policy added in each phase (GET /mme), the hot model's workers at the end
(GET /models/{name}) and req/s. The right wait adds none for spread traffic and still grows the hot model.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from bench import report
from bench.client import BenchError, Http, load_all, model_workers, note, throughput, verify_all
from bench.models import make_models
from bench.servers import Ours


def _mme(http: Http) -> dict:
    status, body = http.call("GET", "/mme")
    if status != 200:
        raise BenchError(f"GET /mme: {status}")
    return json.loads(body)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_policy", description=__doc__)
    p.add_argument("--models", type=int, default=20)
    p.add_argument("--waits", default="0,10,50,200", help="MME_SCALE_UP_WAIT_MS values, comma-separated")
    p.add_argument("--backend", default="hosts", choices=("hosts", "zygote"))
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--duration", type=float, default=2.0, help="seconds per window")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args(argv)
    waits = [int(w) for w in args.waits.split(",")]
    work = Path(tempfile.mkdtemp(prefix="bench-policy-"))
    models = make_models(work / "models", args.models, with_vanilla=False)
    variants = {f"wait {w} ms": {"MME_SCALE_UP_WAIT_MS": str(w)} for w in waits}
    variants["policy off"] = {"MME_MAX_WORKERS_PER_MODEL": "1"}
    servers: dict[str, tuple[Ours, Http]] = {}
    rows = []
    try:
        for label, env in variants.items():
            server = Ours(work / label.replace(" ", "-"), args.backend,
                          {**env, "MME_SCALE_DOWN_IDLE_SECONDS": "3600"})
            server.start()
            http = Http(server.port)
            servers[label] = (server, http)
            run = load_all(http, models, "ours", f"load {label}", time.monotonic() + 300)
            if run.stopped:
                raise BenchError(f"{label}: {run.stopped}")
            verify_all(http, models, f"verify {label}")
        got: dict[str, dict[str, float]] = {k: {} for k in servers}
        for phase, targets in (("spread", models), ("hot", models[:1])):
            for rnd in range(args.rounds):
                order = list(servers)[rnd % len(servers):] + list(servers)[:rnd % len(servers)]
                for label in order:
                    server, http = servers[label]
                    tp = throughput(server.port, targets, args.clients, args.duration, 10**9)
                    if tp.errors:
                        raise BenchError(f"{label}: {tp.errors} errors in the {phase} phase")
                    g = got[label]
                    g[f"{phase}_ok"] = g.get(f"{phase}_ok", 0) + tp.ok
                    g[f"{phase}_s"] = g.get(f"{phase}_s", 0) + tp.elapsed_s
            for label, (_, http) in servers.items():
                got[label][f"{phase}_added"] = _mme(http)["workers_added_for_load"]
            note(f"[bench] policy: {phase} phase done")
        for label, (_, http) in servers.items():
            verify_all(http, models, f"verify {label} after")
            g = got[label]
            rows.append([label, f"{g['spread_ok'] / g['spread_s']:,.0f}", f"{g['spread_added']:.0f}",
                         f"{g['hot_ok'] / g['hot_s']:,.0f}", f"{g['hot_added'] - g['spread_added']:.0f}",
                         str(model_workers(http, models[0].name))])
    finally:
        for server, http in servers.values():
            http.close()
            server.stop()
    print(f"worker-count policy, backend {args.backend}, {args.models} models, {args.clients} clients, "
          f"{args.rounds} alternating windows of {args.duration:g} s per phase")
    print(f"command: {shlex.join(sys.orig_argv)}")
    print(report.format_table(
        ["server", "req/s spread", "workers added (spread)", "req/s hot model", "workers added (hot)",
         "hot model's workers"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
