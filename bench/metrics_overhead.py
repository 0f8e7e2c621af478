"""`python -m bench.metrics_overhead`: what the container's per-model metrics cost a warm invoke.

Two of our containers in the same run, one with the per-connection metrics handler (the default) and one
without it (`_MME_METRICS_HANDLER=off`, a bench-only switch), the same models loaded into each; warm
invokes alternate between them in rounds so both see the same machine load, `--repeats` times. Prints
both p50s and their ratio per repeat and the median ratio, and how long GET /metrics takes.

`--scrape-models M` then loads and invokes M more names into the metrics-on container and times GET
/metrics: the first scrapes right after the loads, then `--scrapes` more at random moments over a few
seconds each (so that whatever the Java front does when idle, such as a GC, can land in them).
`--scrape-resident R` keeps at most R of those names loaded (the oldest is unloaded as the next loads):
every name keeps its series, so the text is that of M models, within the machine's memory.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import psutil

from bench.client import Http, load_all, verify_all, warm_latency
from bench.models import make_models
from bench.servers import Ours

JSON = {"Content-Type": "application/json"}


def scrape_once(http: Http) -> tuple[float, int]:
    """Milliseconds of one GET /metrics, and the size of its answer."""
    t0 = time.perf_counter()
    status, body = http.call("GET", "/metrics")
    took = 1000 * (time.perf_counter() - t0)
    assert status == 200, body[:200]
    return took, len(body)


def scrape_ms(http: Http, times: int = 5) -> tuple[float, int]:
    """Median milliseconds of GET /metrics, and the size of its answer."""
    runs = [scrape_once(http) for _ in range(times)]
    return statistics.median(t for t, _ in runs), runs[-1][1]


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


def _scrape_with_more_models(http: Http, models: list, args: argparse.Namespace, result: dict) -> None:
    names = [f"extra_{i:05d}" for i in range(args.scrape_models)]
    resident = args.scrape_resident or len(names)
    loaded: deque[str] = deque()
    t0 = time.monotonic()
    for i, name in enumerate(names):
        if loaded and psutil.virtual_memory().available < args.min_available_gb * 2**30:
            # A shared machine: hold fewer names loaded rather than press on others' work.
            resident = min(resident, len(loaded) - 1)
            print(f"[bench] machine memory short: at most {resident} extra names stay loaded", flush=True)
        while len(loaded) > max(resident - 1, 0):
            gone = loaded.popleft()
            status, text = http.call("DELETE", f"/models/{gone}", retry=False)
            if status != 200:
                raise SystemExit(f"[bench] unloading {gone} answered {status}: {text[:200]!r}")
        m = models[i % len(models)]
        body = json.dumps({"model_name": name, "url": str(m.ours_dir)}).encode()
        status, text = http.call("POST", "/models", body, JSON, retry=False)
        if status != 200:
            raise SystemExit(f"[bench] loading {name} answered {status}: {text[:200]!r}")
        loaded.append(name)
        http.call("POST", f"/models/{name}/invoke", m.body,
                  {"Content-Type": "text/csv", "X-Amzn-SageMaker-Target-Model": f"{name}.tar.gz"})
    result["scrape_names"] = len(models) + len(names)
    result["scrape_models_loaded"] = len(models) + len(loaded)
    result["scrape_models_load_s"] = time.monotonic() - t0
    first = [scrape_once(http) for _ in range(5)]  # the first scrapes: nothing warmed them but the plugin
    print(f"[bench] first scrapes after the loads: {[round(t, 1) for t, _ in first]} ms", flush=True)
    result["scrape_first_ms"] = [round(t, 1) for t, _ in first]
    spaced = []
    for _ in range(args.scrapes):
        time.sleep(random.uniform(0, 3.5))
        spaced.append(scrape_once(http))
        print(f"[bench] scrape {len(spaced)}: {spaced[-1][0]:.1f} ms", flush=True)
    took = sorted(t for t, _ in spaced)
    result["scrape_spaced"] = [round(t, 1) for t in took]
    result["scrape_ms_loaded"], result["scrape_bytes_loaded"] = statistics.median(took), spaced[-1][1]
    result["scrape_ms_loaded_max"] = took[-1]
    result["scrape_over_100ms"] = sum(t > 100 for t in took + [t for t, _ in first])


def _print(result: dict, models: int, scrape_models: int) -> None:
    print(f"warm invoke p50, {result['invokes_each']} invokes each over {models} models per repeat, "
          "same run:")
    for i, r in enumerate(result["repeats"], 1):
        print(f"  repeat {i}: metrics on {r['p50_ms_on']:.3f} ms, off {r['p50_ms_off']:.3f} ms, "
              f"ratio {r['ratio']:.3f}")
    print(f"  median ratio {result['ratio']:.3f} of {len(result['repeats'])} (target: within 3%); "
          f"p50 on {result['p50_ms_on']:.3f} ms, off {result['p50_ms_off']:.3f} ms (medians)")
    print(f"GET /metrics   {result['scrape_ms']:.1f} ms ({result['scrape_bytes']} bytes)")
    if scrape_models:
        print(f"GET /metrics with {result['scrape_names']} names invoked, {result['scrape_models_loaded']} "
              f"of them loaded ({result['scrape_bytes_loaded']} bytes; loads took "
              f"{result['scrape_models_load_s']:.0f} s):")
        print(f"  first 5 scrapes {result['scrape_first_ms']} ms")
        print(f"  then {len(result['scrape_spaced'])} at random moments: median "
              f"{result['scrape_ms_loaded']:.1f} ms, max {result['scrape_ms_loaded_max']:.1f} ms; "
              f"over 100 ms (all): {result['scrape_over_100ms']}")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.metrics_overhead", description=__doc__)
    p.add_argument("--models", type=int, default=10, help="distinct small models loaded into each container")
    p.add_argument("--invokes", type=int, default=4000, help="warm invokes per container")
    p.add_argument("--rounds", type=int, default=20, help="alternations between the two containers")
    p.add_argument("--repeats", type=int, default=3,
                   help="measure the on/off p50s this many times (the same containers); the median ratio")
    p.add_argument("--scrape-models", type=int, default=0, metavar="M",
                   help="then load M more names (the same small models) into the metrics-on container and "
                        "time GET /metrics")
    p.add_argument("--scrape-resident", type=int, default=0, metavar="R",
                   help="keep at most R of the M names loaded (default: all M)")
    p.add_argument("--min-available-gb", type=float, default=3.0,
                   help="stop adding loaded names while the machine has less memory available than this")
    p.add_argument("--scrapes", type=int, default=21, help="scrapes at random moments after the first 5")
    p.add_argument("--metrics-max-models", type=int, default=0, metavar="N",
                   help="MME_METRICS_MAX_MODELS of the metrics-on container (default: the container's)")
    p.add_argument("--backend", choices=("hosts", "zygote"), default="hosts",
                   help="MME_BACKEND of both containers (hosts, the default: 1,000 models fit in ~1 GB)")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mme-bench-metrics-") as tmp:
        work = Path(tmp)
        models = make_models(work / "models", args.models, with_vanilla=False)
        off = {"_MME_METRICS_HANDLER": "off"}
        on = {"MME_METRICS_MAX_MODELS": str(args.metrics_max_models)} if args.metrics_max_models else {}
        servers = {"on": Ours(work / "on", backend=args.backend, extra_env=on),
                   "off": Ours(work / "off", backend=args.backend, extra_env=off)}
        try:
            https = {label: _start_and_load(label, server, models) for label, server in servers.items()}
            repeats = []
            for _ in range(args.repeats):
                samples = _alternate(https, models, args.invokes, args.rounds)
                p50 = {k: 1000 * statistics.median(v) for k, v in samples.items()}
                repeats.append({"p50_ms_on": p50["on"], "p50_ms_off": p50["off"],
                                "ratio": p50["on"] / p50["off"]})
            result = {"models": args.models, "invokes_each": len(samples["on"]), "repeats": repeats,
                      **{k: statistics.median(r[k] for r in repeats)
                         for k in ("p50_ms_on", "p50_ms_off", "ratio")}}
            result["scrape_ms"], result["scrape_bytes"] = scrape_ms(https["on"])
            if args.scrape_models:
                _scrape_with_more_models(https["on"], models, args, result)
        finally:
            for server in servers.values():
                server.stop()
    _print(result, args.models, args.scrape_models)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
