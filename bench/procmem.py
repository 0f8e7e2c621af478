"""Memory of a whole server process tree: PSS summed over every process, split by role.

PSS (proportional set size) charges each shared page to its sharers in proportion, so the sum over a
tree counts forked, copy-on-write pages once. That is the figure that says how many models fit.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import psutil

# MMS's host-metrics collector: a short-lived python started every metric_time_interval seconds
# (60 s in stock MMS). Counting it would add ~20 MB at random to whichever snapshot it overlaps.
TRANSIENT_MARKERS = ("metric_collector",)

ROLES = ("server", "java", "zygote", "launcher", "backend", "worker", "other")


def pss_bytes(pid: int) -> int | None:
    """PSS of one process from /proc/PID/smaps_rollup, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return 0


def cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return ""  # exited while we looked: its PSS read returns None and it is skipped


def _role(proc: psutil.Process, parent_role: str | None) -> str:
    """What a process is in either server's tree (see README: 'Where the memory goes')."""
    cmd = cmdline(proc)
    if parent_role is None:
        return "server"  # container/serve's python, or the multi-model-server launcher
    if "java" in _name(proc):
        return "java"
    if parent_role == "server" and "sklearn_mme.container.zygote" in cmd:
        return "zygote"
    if parent_role == "server" and "multiprocessing.spawn" in cmd:
        return "worker"  # MLServer's inference pool (parallel_workers): each holds every loaded model
    if parent_role == "java":
        # Ours: a tiny stand-in (C, or stdlib-only python) that asks the zygote for a worker;
        # vanilla and ours-fresh: a fresh python backend server per model.
        fresh = "sklearn_mme.container.backend" in cmd
        return "launcher" if "python-launcher" in cmd and not fresh else "backend"
    if parent_role in ("zygote", "backend"):
        # The process that holds a model and predicts: ours forks it from the warm zygote; MMS's
        # backend forks it from a fresh interpreter (default_workers_per_model=1).
        return "worker"
    return "other"


@dataclass
class Snapshot:
    """Total PSS of a tree and how it splits by role."""

    total: int = 0
    count: int = 0
    by_role: dict[str, list[int]] = field(default_factory=dict)  # role -> [processes, bytes]

    def add(self, role: str, nbytes: int) -> None:
        entry = self.by_role.setdefault(role, [0, 0])
        entry[0] += 1
        entry[1] += nbytes
        self.total += nbytes
        self.count += 1


def walk(root_pid: int) -> list[tuple[psutil.Process, str]]:
    """Every live process under (and including) root_pid, with its role; parents before children."""
    try:
        root = psutil.Process(root_pid)
    except psutil.NoSuchProcess:
        return []
    # One pass over /proc for every parent: psutil's children() scans all of /proc per call, which made a
    # walk of 1,400 models' processes take ~40 s.
    children: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc)
    out, stack = [], [(root, None)]
    while stack:
        proc, parent_role = stack.pop()
        role = _role(proc, parent_role)
        out.append((proc, role))
        stack.extend((child, role) for child in children.get(proc.pid, ()))
    return out


def snapshot(root_pid: int, seen: dict[int, psutil.Process] | None = None) -> Snapshot:
    """One pass over the tree. `seen` collects every process met, for the leftover check at teardown."""
    snap = Snapshot()
    for proc, role in walk(root_pid):
        if seen is not None:
            seen.setdefault(proc.pid, proc)
        if any(m in cmdline(proc) for m in TRANSIENT_MARKERS):
            continue
        nbytes = pss_bytes(proc.pid)
        if nbytes is not None:
            snap.add(role, nbytes)
    return snap


def settled_snapshot(root_pid: int, seen: dict[int, psutil.Process] | None = None,
                     samples: int = 3, gap_s: float = 0.3) -> Snapshot:
    """The median of a few snapshots by total: one GC or a page-in mid-read doesn't decide the figure."""
    snaps = []
    for i in range(samples):
        if i:
            time.sleep(gap_s)
        snaps.append(snapshot(root_pid, seen))
    median_total = statistics.median_low(s.total for s in snaps)
    return next(s for s in snaps if s.total == median_total)


def cpu_seconds(root_pid: int) -> float:
    """User + system CPU time used so far by the live processes of the tree."""
    total = 0.0
    for proc, _ in walk(root_pid):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def role_delta_per_model(idle: Snapshot, loaded: Snapshot, n: int,
                         unloaded: Snapshot | None = None) -> dict[str, dict[str, float]]:
    """Per role: processes and PSS bytes added per loaded model, and what unloading left behind."""
    out = {}
    for role in ROLES:
        b = idle.by_role.get(role, [0, 0])
        a = loaded.by_role.get(role, [0, 0])
        u = unloaded.by_role.get(role, [0, 0]) if unloaded is not None else None
        if a == b == [0, 0] and u in (None, [0, 0]):
            continue
        out[role] = {"procs_per_model": (a[0] - b[0]) / n, "bytes_per_model": (a[1] - b[1]) / n,
                     "bytes_after": a[1], "procs_after": a[0]}
        if u is not None:
            out[role]["unloaded_minus_idle_bytes"] = u[1] - b[1]
    return out


def alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those still running (psutil checks the create time, so a reused pid is not mistaken for ours)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            continue
    return out
