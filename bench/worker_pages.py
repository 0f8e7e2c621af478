"""`python -m bench.worker_pages`: where a big model's extra workers keep their own pages (issue 13).

Starts ours with SAGEMAKER_MODEL_SERVER_WORKERS=W, loads bench --big's 60-tree forest, and prints each
worker's private kB by kind of mapping (bench/smaps.py) at three moments: right after every worker has
loaded (no request yet), once every worker has answered, and after `--invokes` more requests. The first
worker (the oldest) is the model's loader; the others are forked from it (container/model_forks.py).

Then, for reference, the floor of any forked worker: in a fresh interpreter, the zygote's imports and
warm-up, the same model loaded by the handler and asked `--warm` times, the GC frozen, one bare
`os.fork()` whose child only calls the handler's `invoke` `--invokes` times: no MMS, no threads. What that
child made private is what the interpreter itself writes: reference counts, the specialising
interpreter's inline caches and counters, dict-keys versions, imports inside functions.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from bench import procmem, smaps
from bench.big import _load, _reach_workers, _write
from bench.client import CSV, Http
from bench.models import big_forest, to_csv
from bench.servers import Ours

MB = 1e6


def _workers(root: int) -> list[psutil.Process]:
    procs = [p for p, role in procmem.walk(root) if role == "worker"]
    return sorted(procs, key=lambda p: (p.create_time(), p.pid))


def _zygote(root: int) -> psutil.Process:
    return next(p for p, role in procmem.walk(root) if role == "zygote")


def _table(root: int, title: str) -> str:
    rows = [("zygote", smaps.breakdown(_zygote(root).pid))]
    for i, proc in enumerate(_workers(root)):
        label = "loader" if i == 0 else f"sibling {i}"
        rows.append((f"{label} ({smaps.threads(proc.pid)}t)", smaps.breakdown(proc.pid)))
    return f"{title}\n{smaps.format_breakdown(rows)}"


def _private_kb(pid: int) -> int:
    return sum(e["private_kb"] for e in smaps.breakdown(pid).values())


def fork_floor(model_dir: Path, body: bytes, warm: int, invokes: int) -> dict[str, int]:
    """Private kB of a bare fork of a warm, frozen process holding the model, before and after invoking."""
    import gc

    from sklearn_mme.container.settings import HANDLER
    from sklearn_mme.container.warmup import preload
    from sklearn_mme.handler.service import ModelService

    preload(HANDLER.read(os.environ))
    service = ModelService.load(model_dir)
    for _ in range(warm):
        service.invoke(body, "text/csv", "application/json")
    gc.collect()
    gc.freeze()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            forked = _private_kb(os.getpid())
            for _ in range(invokes):
                service.invoke(body, "text/csv", "application/json")
            os.write(write_end, json.dumps({"forked": forked, "invoked": _private_kb(os.getpid())}).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as r:
        data = r.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.worker_pages", description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--invokes", type=int, default=200, help="requests after every worker has answered")
    p.add_argument("--ours-env", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--settle", type=float, default=2.0, help="seconds before each reading")
    p.add_argument("--warm", type=int, default=20, help="invokes in the parent before the reference fork")
    p.add_argument("--floor", type=Path, default=None, metavar="MODEL_DIR", help=argparse.SUPPRESS)
    p.add_argument("--body", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.floor is not None:  # the reference fork, run in a fresh interpreter by the main path below
        assert args.body is not None
        print(json.dumps(fork_floor(args.floor, args.body.read_bytes(), args.warm, args.invokes)))
        return 0
    env = dict(kv.split("=", 1) for kv in args.ours_env)
    workdir = Path(tempfile.mkdtemp(prefix="mme-pages-"))
    forest, rows = big_forest()
    model_dir = _write(workdir / "models", "forest", forest)
    body, expected = to_csv(rows), [int(v) for v in forest.predict(rows)]
    server = Ours(workdir / "server", extra_env={**env, "SAGEMAKER_MODEL_SERVER_WORKERS": str(args.workers)})
    http = Http(server.port)
    try:
        server.start()
        assert server.proc is not None
        root = server.proc.pid
        time.sleep(args.settle)
        idle = server.snapshot()
        _load(http, "forest", model_dir)
        deadline = time.monotonic() + 60
        while len(_workers(root)) < args.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(args.settle)
        print(_table(root, f"W={args.workers}, every worker loaded, no request yet"), "\n")
        _reach_workers(server.port, "forest", body, expected, args.workers, 120)
        time.sleep(args.settle)
        print(_table(root, "every worker has answered"), "\n")
        for _ in range(args.invokes):
            status, answer = http.call("POST", "/models/forest/invoke", body, CSV)
            if status != 200 or json.loads(answer)["predictions"] != expected:
                raise SystemExit(f"wrong answer: {status} {answer[:200]!r}")
        time.sleep(args.settle)
        print(_table(root, f"after {args.invokes} more requests"), "\n")
        loaded = server.snapshot()
        roles = [r for r in procmem.ROLES if r in loaded.by_role or r in idle.by_role]
        added = {r: (loaded.by_role.get(r, [0, 0])[1] - idle.by_role.get(r, [0, 0])[1]) / MB for r in roles}
        print(f"whole-container PSS added by the model at W={args.workers}: "
              f"{(loaded.total - idle.total) / MB:.1f} MB; by role: "
              + ", ".join(f"{r} {v:+.1f}" for r, v in added.items()))
    finally:
        http.close()
        server.stop()
    (workdir / "body.csv").write_bytes(body)
    floor = json.loads(subprocess.run(
        [sys.executable, "-m", "bench.worker_pages", "--floor", str(model_dir),
         "--body", str(workdir / "body.csv"), "--warm", str(args.warm), "--invokes", str(args.invokes)],
        check=True, capture_output=True, text=True).stdout.splitlines()[-1])
    print(f"\nreference, a bare fork of a warm process holding the model ({args.warm} invokes before the "
          f"fork): private {floor['forked']:,} kB right after the fork, {floor['invoked']:,} kB after "
          f"{args.invokes} invokes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
