"""Warm latency and throughput with every server up at once, measured in alternating windows.

The machine is shared: other people's jobs took the load average from 3 to 44 within one run, which
moves req/s by 2x. Measured one server after another, that drift decides the ratio. Here every
server is loaded and answering, and the windows go ours, vanilla, ..., vanilla, ours, ... so the
neighbours' load falls on every column alike. (Memory is never measured here: with two trees up,
shared library pages are split between them and each tree's PSS would look smaller.)
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench import report
from bench.client import BenchError, Http, load_all, note, throughput, verify_all, warm_latency
from bench.models import BenchModel
from bench.servers import Server, layout, make_server

TIMING_KEYS = ("warm_p50_ms", "warm_p99_ms", "warm_newconn_p50_ms", "warm_newconn_p99_ms", "throughput_rps",
               "cpu_per_request_ms")


@dataclass
class Timing:
    """What one server's windows add up to."""

    latencies: list[float] = field(default_factory=list)
    newconn_latencies: list[float] = field(default_factory=list)
    invoke_errors: int = 0
    wrong_answers: int = 0
    ok: int = 0
    throughput_errors: int = 0
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    load_averages: list[float] = field(default_factory=list)
    killed_after_stop: list[str] = field(default_factory=list)
    leftover_processes: list[str] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        if not self.latencies or not self.newconn_latencies or not self.ok:
            raise BenchError("no successful request in the interleaved windows")
        return {
            "warm_p50_ms": report.percentile(self.latencies, 50) * 1000.0,
            "warm_p99_ms": report.percentile(self.latencies, 99) * 1000.0,
            "warm_newconn_p50_ms": report.percentile(self.newconn_latencies, 50) * 1000.0,
            "warm_newconn_p99_ms": report.percentile(self.newconn_latencies, 99) * 1000.0,
            "throughput_rps": self.ok / self.elapsed_s,
            "cpu_per_request_ms": self.cpu_s / self.ok * 1000.0,
        }


def _start_loaded(kind: str, models: Sequence[BenchModel], args: argparse.Namespace, workdir: Path,
                  tag: str) -> tuple[Server, Http]:
    server = make_server(kind, workdir, args.ours_env)
    http = Http(server.port)
    note(f"[bench] {tag}: starting {server.label} on port {server.port} for the timing windows")
    server.start()
    run = load_all(http, models, layout(kind), f"{tag}: load {kind}", time.monotonic() + args.phase_timeout,
                   proto=server.protocol)
    if run.stopped:
        raise BenchError(f"{server.label}: {run.stopped}")
    verify_all(http, models, f"{tag}: verify {kind}", server.protocol)
    return server, http


def interleaved_timing(kinds: Sequence[str], models: Sequence[BenchModel], args: argparse.Namespace,
                       workdir: Path, tag: str) -> dict[str, Timing]:
    """Start and load every server, then `args.rounds` rounds of (latency, throughput) per server."""
    servers: dict[str, tuple[Server, Http]] = {}
    timings = {kind: Timing() for kind in kinds}
    per_round = max(1, args.invokes // args.rounds)
    window_s = args.duration / args.rounds
    try:
        for kind in kinds:
            servers[kind] = _start_loaded(kind, models, args, workdir / f"{kind}-timing", tag)
        for rnd in range(args.rounds):
            # Rotate within the round too, so no server always follows the same one.
            order = list(kinds[rnd % len(kinds):]) + list(kinds[:rnd % len(kinds)])
            for kind in order:
                server, http = servers[kind]
                t = timings[kind]
                # Idle while the other servers had their windows (MLServer's uvicorn closes an idle
                # keep-alive connection after 5 s): connect before the clock starts, not inside it.
                http.close()
                http.call(*server.protocol.invoke(models[0]))
                for fresh in (False, True):
                    lat = warm_latency(http, models, per_round, time.monotonic() + args.phase_timeout,
                                       f"{tag}: round {rnd + 1}/{args.rounds} {kind}", server.protocol,
                                       new_connection=fresh)
                    (t.newconn_latencies if fresh else t.latencies).extend(lat.seconds)
                    t.invoke_errors += lat.errors
                    t.wrong_answers += lat.wrong
                t.load_averages.append(os.getloadavg()[0])
                cpu0 = server.cpu_seconds()
                cap = max(1, args.max_requests // args.rounds)
                tp = throughput(server.port, models, args.clients, window_s, cap, server.protocol)
                t.cpu_s += server.cpu_seconds() - cpu0
                t.ok += tp.ok
                t.throughput_errors += tp.errors
                t.elapsed_s += tp.elapsed_s
    finally:
        for kind, (server, http) in servers.items():
            http.close()
            server.stop()
            timings[kind].killed_after_stop = server.killed
            timings[kind].leftover_processes = server.leftovers
    return timings
