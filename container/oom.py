"""Did the kernel's OOM killer strike? A monotonic count of OOM kills visible to this process (Linux).

A worker killed by SIGKILL mid-request is either someone's `kill -9` or the OOM killer; only the second
deserves 507 (the model needs more memory than the container has). The kernel counts OOM kills in
/proc/vmstat (the whole machine, kernel >= 4.13) and per memory cgroup (v2 `memory.events`, v1
`memory.oom_control`); a rise in the sum since the last look means an OOM kill happened meanwhile.
The cgroup is re-read each time: a process can be moved between cgroups while it runs.
"""

from __future__ import annotations

from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _cgroup_files(proc_cgroup: str = "/proc/self/cgroup") -> set[Path]:
    """The OOM counter files of this process's memory cgroup (v2 unified or v1 memory controller)."""
    files: set[Path] = set()
    try:
        lines = Path(proc_cgroup).read_text().splitlines()
    except OSError:
        return files
    for line in lines:
        _, controllers, rel = line.split(":", 2)
        rel = rel.lstrip("/")
        if controllers == "":  # v2
            files.add(CGROUP_ROOT / rel / "memory.events")
            files.add(CGROUP_ROOT / "memory.events")  # inside a container's cgroup namespace
        elif "memory" in controllers.split(","):
            files.add(CGROUP_ROOT / "memory" / rel / "memory.oom_control")
            files.add(CGROUP_ROOT / "memory" / "memory.oom_control")  # v1 as mounted in a container
    return files


def oom_kill_count() -> int:
    """Sum of the OOM-kill counters this process can see; only its increase means anything."""
    return _counter(Path("/proc/vmstat"), "oom_kill") + sum(
        _counter(path, "oom_kill") for path in _cgroup_files()
    )
