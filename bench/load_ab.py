"""`python -m bench.load_ab`: cold loads with and without a switch, both containers up at once.

Two of our containers (`--backend`, shared hosts by default); one runs with `--off KEY=VALUE` in its
environment (repeatable; default `MME_SPARE_LAUNCHERS=0`: MMS starts each model's launcher as the load
comes). Each repeat POSTs `--models` small models to both, one after another as SageMaker does, the two
containers alternating (which goes first flips every model), then DELETEs them all the same way. The
machine is shared and its load moves a cold load by 2x within minutes: alternating puts that drift on
both columns alike. Prints per repeat the client-side p50 of a load and of a DELETE in each, the ratio
off/on (above 1: the default is faster), and the medians over the repeats.
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

from bench.client import JSON, BenchError, Http
from bench.models import make_models
from bench.servers import Ours

ROWS = ("load_p50_ms", "delete_p50_ms")


def _timed(http: Http, method: str, path: str, body: bytes | None, what: str) -> float:
    t0 = time.perf_counter()
    status, text = http.call(method, path, body, JSON if body else None, retry=False)
    elapsed = time.perf_counter() - t0
    if status != 200:
        raise BenchError(f"{what} answered {status}: {text[:200]!r}")
    return elapsed


def _repeat(https: dict[str, Http], models: list, r: int) -> dict[str, dict[str, float]]:
    loads: dict[str, list[float]] = {k: [] for k in https}
    deletes: dict[str, list[float]] = {k: [] for k in https}
    labels = list(https)
    for i, m in enumerate(models):
        body = json.dumps({"model_name": m.name, "url": str(m.ours_dir)}).encode()
        for label in labels if (i + r) % 2 == 0 else labels[::-1]:
            loads[label].append(_timed(https[label], "POST", "/models", body, f"{label}: loading {m.name}"))
    for i, m in enumerate(models):
        for label in labels if (i + r) % 2 == 0 else labels[::-1]:
            deletes[label].append(
                _timed(https[label], "DELETE", f"/models/{m.name}", None, f"{label}: deleting {m.name}"))
    return {k: {"load_p50_ms": 1000 * statistics.median(loads[k]),
                "delete_p50_ms": 1000 * statistics.median(deletes[k])} for k in https}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.load_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=int, default=50, help="small models per container and repeat")
    p.add_argument("--repeats", type=int, default=5, help="times every model is loaded and deleted")
    p.add_argument("--backend", choices=("hosts", "zygote"), default="hosts", help="MME_BACKEND of both")
    p.add_argument("--off", action="append", default=[], metavar="KEY=VALUE",
                   help="the environment of the 'off' container (repeatable; default MME_SPARE_LAUNCHERS=0)")
    p.add_argument("--settle", type=float, default=2.0, help="seconds between the start and the first load")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)
    off = dict(kv.partition("=")[::2] for kv in args.off or ["MME_SPARE_LAUNCHERS=0"])

    with tempfile.TemporaryDirectory(prefix="mme-bench-load-ab-") as tmp:
        work = Path(tmp)
        models = make_models(work / "models", args.models, with_vanilla=False)
        servers = {"on": Ours(work / "on", backend=args.backend),
                   "off": Ours(work / "off", backend=args.backend, extra_env=off)}
        https: dict[str, Http] = {}
        try:
            for label, server in servers.items():
                server.start()
                https[label] = Http(server.port)
            time.sleep(args.settle)
            repeats = [_repeat(https, models, r) for r in range(args.repeats)]
        finally:
            for http in https.values():
                http.close()
            for server in servers.values():
                server.stop()
    med = {k: {row: statistics.median(r[k][row] for r in repeats) for row in ROWS} for k in ("on", "off")}
    switch = " ".join(f"{k}={v}" for k, v in off.items())
    print(f"{switch} ('off') against the default ('on'), {args.models} models, backend {args.backend}, "
          f"{args.repeats} repeats, loads and DELETEs alternating (client-side p50s; ratio off/on):")
    for row in ROWS:
        per = " ".join(f"{r['on'][row]:.2f}/{r['off'][row]:.2f}" for r in repeats)
        a, b = med["on"][row], med["off"][row]
        print(f"  {row:14s} on {a:7.2f}  off {b:7.2f}  ratio {b / a:.3f}   per repeat on/off: {per}")
    if args.json:
        args.json.write_text(json.dumps({"repeats": repeats, "median": med, "off": off}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
