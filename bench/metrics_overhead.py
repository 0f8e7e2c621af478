"""`python -m bench.metrics_overhead`: what the container's per-model metrics cost a warm invoke.

Two of our containers in the same run, one with the per-connection metrics handler (the default) and one
without it (`_MME_METRICS_HANDLER=off`, a bench-only switch), the same models loaded into each; warm
invokes alternate between them in rounds so both see the same machine load. Prints both p50s and their
ratio, and how long GET /metrics takes with the models loaded (`--scrape-models M` loads M names first).
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

from bench.client import Http, load_all, verify_all, warm_latency
from bench.models import make_models
from bench.servers import Ours

JSON = {"Content-Type": "application/json"}


def scrape_ms(http: Http, times: int = 5) -> tuple[float, int]:
    """Median milliseconds of GET /metrics, and the size of its answer."""
    took, size = [], 0
    for _ in range(times):
        t0 = time.perf_counter()
        status, body = http.call("GET", "/metrics")
        took.append(1000 * (time.perf_counter() - t0))
        assert status == 200, body[:200]
        size = len(body)
    return statistics.median(took), size


def _start_and_load(label: str, server: Ours, models: list) -> Http:
    server.start()
    http = Http(server.port)
    ready = time.monotonic() + 30
    while http.call("GET", "/metrics")[0] != 200:  # the handler sees every connection
        if time.monotonic() > ready:
            raise SystemExit(f"[bench] metrics-{label}: GET /metrics never answered 200")
        time.sleep(0.05)
    run = load_all(http, models, "ours", f"loading ({label})", time.monotonic() + 600)
    if run.stopped:
        raise SystemExit(f"[bench] loading into metrics-{label} stopped: {run.stopped}")
    verify_all(http, models, f"verifying ({label})")
    return http


def _alternate(https: dict[str, Http], models: list, invokes: int, rounds: int) -> dict[str, list[float]]:
    """Warm latencies of both containers, in alternating rounds so drift on the machine hits both alike."""
    samples: dict[str, list[float]] = {"on": [], "off": []}
    per_round = max(1, invokes // rounds)
    for r in range(rounds):
        for label in ("on", "off") if r % 2 == 0 else ("off", "on"):
            lat = warm_latency(https[label], models, per_round, time.monotonic() + 300, label)
            if lat.errors or lat.wrong:
                raise SystemExit(f"[bench] metrics-{label}: {lat.errors} errors, {lat.wrong} wrong")
            samples[label].extend(lat.seconds)
    return samples


def _scrape_with_more_models(http: Http, models: list, count: int, result: dict) -> None:
    names = [f"extra_{i:05d}" for i in range(count)]
    t0 = time.monotonic()
    for i, name in enumerate(names):
        m = models[i % len(models)]
        body = json.dumps({"model_name": name, "url": str(m.ours_dir)}).encode()
        status, text = http.call("POST", "/models", body, JSON, retry=False)
        if status != 200:
            raise SystemExit(f"[bench] loading {name} answered {status}: {text[:200]!r}")
        http.call("POST", f"/models/{name}/invoke", m.body, {"Content-Type": "text/csv"})
    result["scrape_models_loaded"] = len(models) + len(names)
    result["scrape_models_load_s"] = time.monotonic() - t0
    # More scrapes than unloaded: a periodic full GC of the Java front (every 3 s when idle) lands in some.
    result["scrape_ms_loaded"], result["scrape_bytes_loaded"] = scrape_ms(http, times=21)


def _print(result: dict, models: int, scrape_models: int) -> None:
    print(f"warm invoke p50, {result['invokes_each']} invokes each over {models} models, same run:")
    print(f"  metrics on   {result['p50_ms_on']:.3f} ms")
    print(f"  metrics off  {result['p50_ms_off']:.3f} ms")
    print(f"  ratio        {result['ratio']:.3f} (target: within 3%)")
    print(f"GET /metrics   {result['scrape_ms']:.1f} ms ({result['scrape_bytes']} bytes)")
    if scrape_models:
        print(f"GET /metrics with {result['scrape_models_loaded']} models loaded and invoked: "
              f"{result['scrape_ms_loaded']:.1f} ms, median of 21 ({result['scrape_bytes_loaded']} bytes; "
              f"loads took {result['scrape_models_load_s']:.0f} s)")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.metrics_overhead", description=__doc__)
    p.add_argument("--models", type=int, default=10, help="distinct small models loaded into each container")
    p.add_argument("--invokes", type=int, default=4000, help="warm invokes per container")
    p.add_argument("--rounds", type=int, default=20, help="alternations between the two containers")
    p.add_argument("--scrape-models", type=int, default=0, metavar="M",
                   help="then load M more names (the same small models) into the metrics-on container and "
                        "time GET /metrics")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mme-bench-metrics-") as tmp:
        work = Path(tmp)
        models = make_models(work / "models", args.models, with_vanilla=False)
        off = {"_MME_METRICS_HANDLER": "off"}
        servers = {"on": Ours(work / "on"), "off": Ours(work / "off", extra_env=off)}
        try:
            https = {label: _start_and_load(label, server, models) for label, server in servers.items()}
            samples = _alternate(https, models, args.invokes, args.rounds)
            p50 = {k: 1000 * statistics.median(v) for k, v in samples.items()}
            result = {"models": args.models, "invokes_each": len(samples["on"]),
                      "p50_ms_on": p50["on"], "p50_ms_off": p50["off"], "ratio": p50["on"] / p50["off"]}
            result["scrape_ms"], result["scrape_bytes"] = scrape_ms(https["on"])
            if args.scrape_models:
                _scrape_with_more_models(https["on"], models, args.scrape_models, result)
        finally:
            for server in servers.values():
                server.stop()
    _print(result, args.models, args.scrape_models)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
