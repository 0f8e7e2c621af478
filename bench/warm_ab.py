"""`python -m bench.warm_ab`: the warm path with and without a plugin switch, both containers up at once.

Two of our containers (`--backend`, shared hosts by default), the same models in each; one runs with
`--off KEY=VALUE` in its environment (repeatable; default the bench-only switch `_MME_EARLY_ANSWERS=off`:
MMS's worker thread answers every invoke, as before EarlyAnswers.java). Warm invokes alternate between them
in `--rounds` windows, over one keep-alive connection and then with a new connection per request, and
`--clients` keep-alive clients for `--duration` s; `--repeats` times. Prints per repeat p50/p99 of both and
the ratio off/on (above 1: the default is faster), and the medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from bench import report
from bench.client import Http, load_all, throughput, verify_all, warm_latency
from bench.models import make_models
from bench.servers import Ours

ROWS = ("keepalive_p50_ms", "keepalive_p99_ms", "newconn_p50_ms", "newconn_p99_ms", "rps")


def _start(label: str, server: Ours, models: list) -> Http:
    server.start()
    http = Http(server.port)
    run = load_all(http, models, "ours", f"loading ({label})", time.monotonic() + 600)
    if run.stopped:
        raise SystemExit(f"[bench] loading into {label} stopped: {run.stopped}")
    verify_all(http, models, f"verifying ({label})")
    return http


def _repeat(servers: dict[str, Ours], https: dict[str, Http], models: list,
            args: argparse.Namespace) -> dict[str, dict[str, float]]:
    keep: dict[str, list[float]] = {k: [] for k in https}
    new: dict[str, list[float]] = {k: [] for k in https}
    ok = {k: 0 for k in https}
    elapsed = {k: 0.0 for k in https}
    per_round = max(1, args.invokes // args.rounds)
    for r in range(args.rounds):
        for label in list(https) if r % 2 == 0 else list(reversed(https)):
            for conn, out in ((False, keep), (True, new)):
                lat = warm_latency(https[label], models, per_round, time.monotonic() + 300, label,
                                   new_connection=conn)
                if lat.errors or lat.wrong:
                    raise SystemExit(f"[bench] {label}: {lat.errors} errors, {lat.wrong} wrong answers")
                out[label].extend(lat.seconds)
            https[label].close()
            t = throughput(servers[label].port, models, args.clients, args.duration / args.rounds, 40_000)
            if t.errors:
                raise SystemExit(f"[bench] {label}: {t.errors} throughput errors")
            ok[label] += t.ok
            elapsed[label] += t.elapsed_s
    return {k: {"keepalive_p50_ms": 1000 * report.percentile(keep[k], 50),
                "keepalive_p99_ms": 1000 * report.percentile(keep[k], 99),
                "newconn_p50_ms": 1000 * report.percentile(new[k], 50),
                "newconn_p99_ms": 1000 * report.percentile(new[k], 99),
                "rps": ok[k] / elapsed[k]} for k in https}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.warm_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=50, help="distinct small models loaded into each container")
    p.add_argument("--invokes", type=int, default=2000, help="warm invokes per container per repeat")
    p.add_argument("--rounds", type=int, default=8, help="alternations between the two containers")
    p.add_argument("--repeats", type=int, default=3, help="times the whole alternation is run")
    p.add_argument("--clients", type=int, default=8, help="keep-alive clients of the throughput windows")
    p.add_argument("--duration", type=float, default=8.0, help="seconds of load per container, repeat")
    p.add_argument("--backend", choices=("hosts", "zygote"), default="hosts", help="MME_BACKEND of both")
    p.add_argument("--off", action="append", default=[], metavar="KEY=VALUE",
                   help="the environment of the 'off' container (repeatable; default _MME_EARLY_ANSWERS=off)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    off = dict(kv.partition("=")[::2] for kv in args.off or ["_MME_EARLY_ANSWERS=off"])

    with tempfile.TemporaryDirectory(prefix="mme-bench-ab-") as tmp:
        work = Path(tmp)
        models = make_models(work / "models", args.models, with_vanilla=False)
        servers = {"on": Ours(work / "on", backend=args.backend),
                   "off": Ours(work / "off", backend=args.backend, extra_env=off)}
        try:
            https = {label: _start(label, s, models) for label, s in servers.items()}
            repeats = [_repeat(servers, https, models, args) for _ in range(args.repeats)]
        finally:
            for server in servers.values():
                server.stop()
    med = {k: {row: statistics.median(r[k][row] for r in repeats) for row in ROWS} for k in ("on", "off")}
    switch = " ".join(f"{k}={v}" for k, v in off.items())
    print(f"{switch} ('off') against the default ('on'), {args.models} models, backend {args.backend}, "
          f"{args.repeats} repeats of {args.rounds} alternating rounds (medians; ratio off/on for times, "
          "on/off for req/s):")
    for row in ROWS:
        per = " ".join(f"{r['on'][row]:.2f}/{r['off'][row]:.2f}" for r in repeats)
        a, b = med["on"][row], med["off"][row]
        ratio = b / a if row != "rps" else a / b
        print(f"  {row:18s} on {a:9.2f}  off {b:9.2f}  ratio {ratio:.3f}   per repeat on/off: {per}")
    if args.json:
        args.json.write_text(json.dumps({"repeats": repeats, "median": med, "off": off}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
