"""bench/smaps.py against real processes: where a forked worker's own pages are (issue 13)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from bench import smaps

# A process with a second thread (which mallocs, so glibc gives it an arena) and a 32 MiB buffer it wrote,
# and its forked child, which writes N MiB of that inherited buffer when told (a line on stdin). Each says
# when it is ready on stdout; both then wait on stdin.
FAMILY = textwrap.dedent("""
    import os, sys, threading
    buf = bytearray(32 << 20)
    buf[::4096] = b"x" * len(buf[::4096])
    ready = threading.Event()
    def worker():
        junk = [bytes(100) for _ in range(1000)]
        ready.set()
        threading.Event().wait()
    threading.Thread(target=worker, daemon=True).start()
    ready.wait()
    mib = int(sys.argv[1])
    print("parent", os.getpid(), flush=True)
    if os.fork() == 0:
        print("child", os.getpid(), flush=True)
        sys.stdin.readline()
        buf[: mib << 20 : 4096] = b"y" * len(buf[: mib << 20 : 4096])
        print("written", flush=True)
        sys.stdin.readline()
        os._exit(0)
    os.wait()
""")


def _private(pid: int) -> int:
    return sum(e["private_kb"] for e in smaps.breakdown(pid).values())


def _rollup_private(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith(("Private_Clean", "Private_Dirty")))


@pytest.fixture
def family():
    proc = subprocess.Popen([sys.executable, "-c", FAMILY, "8"], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        pids = dict(proc.stdout.readline().split() for _ in range(2))
        yield proc, int(pids["parent"]), int(pids["child"])
    finally:
        proc.kill()
        proc.wait()


def test_breakdown_adds_up_to_the_kernels_totals(family) -> None:
    _, _, child = family
    os.kill(child, signal.SIGSTOP)  # its pages stay as they are while we read them twice
    try:
        kinds = smaps.breakdown(child)
        rollup = _rollup_private(child)
    finally:
        os.kill(child, signal.SIGCONT)
    assert set(kinds) <= set(smaps.KINDS)
    assert sum(e["private_kb"] for e in kinds.values()) == rollup


def test_a_thread_shows_its_stack_and_its_malloc_arena(family) -> None:
    _, parent, _ = family
    kinds = smaps.breakdown(parent)
    assert kinds["thread stack"]["mappings"] == 1
    assert kinds["malloc arena"]["private_kb"] > 0
    assert smaps.threads(parent) == 2


def test_a_forked_child_pays_for_the_pages_it_writes(family) -> None:
    proc, _, child = family
    assert proc.stdin is not None and proc.stdout is not None
    before = _private(child)
    proc.stdin.write("go\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "written"
    after = _private(child)
    # Each page it wrote was shared with its parent and is now its own: 8 MiB more, and little else.
    assert 8 * 1024 <= after - before < 9 * 1024
