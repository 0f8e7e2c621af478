"""Container-wide accounting of model memory, shared by every backend process through a directory.

Each backend worker owns one model and records its measured bytes in `<dir>/<pid>` ("BYTES NAME", then one
"skew TAB LIBRARY TAB WRITTEN TAB INSTALLED" line per library version skew it was loaded with); a shared
host process (hosts.py) records such lines for every model it holds. A load sums the records of live processes
to decide whether one more model fits the budget (else 507, as SageMaker expects so it can unload something
and retry). The zygote removes a worker's record when it reaps it (`forget`); files of dead processes are
swept as well, so a killed worker frees its share without any coordinator. A record older than the process
now holding its pid is a reused pid's, not that process's.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
HOST_LINE = "host"  # a shared host's record (hosts.py) says so in its first line; total() skips it


def _boot_time() -> float:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("btime "):
                return float(line.split()[1])
    return 0.0


_BOOT = _boot_time()


def _start_time(pid: int) -> float | None:
    """When process pid started (epoch seconds, to ~1 s: /proc's boot time is whole seconds), or None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
    return _BOOT + int(fields[19]) / _TICKS


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


class MemoryLedger:
    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)

    def total(self, exclude_pid: int | None = None) -> int:
        """Bytes held by live processes (sweeping records of dead ones)."""
        total = 0
        for entry in self.dir.iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if pid == exclude_pid:
                continue
            if not _alive(pid) or self._stale(entry, pid):
                entry.unlink(missing_ok=True)
                continue
            try:
                lines = entry.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                try:
                    total += int(line.split()[0])
                except (ValueError, IndexError):
                    continue
        return total

    @staticmethod
    def _stale(entry: Path, pid: int) -> bool:
        """Written before its pid's current process started: left by an earlier process with that pid."""
        started = _start_time(pid)
        try:
            written = entry.stat().st_mtime
        except OSError:
            return True
        return started is not None and started > written + 1.0

    def forget(self, pid: int) -> None:
        """Drop pid's record (its process ended)."""
        (self.dir / str(pid)).unlink(missing_ok=True)

    def record(self, nbytes: int, label: str, pid: int | None = None,
               skews: Iterable[tuple[str, str, str]] = ()) -> None:
        self.record_all([(nbytes, label, skews)], pid)

    def record_all(self, entries: Iterable[tuple[int, str, Iterable[tuple[str, str, str]]]],
                   pid: int | None = None, shared_host: bool = False) -> None:
        """Replace pid's record: per model `BYTES NAME`, then one `skew\tLIBRARY\tWRITTEN\tINSTALLED` line per
        version skew it was loaded with; a shared host's record starts with a `host` line. Our MMS plugin
        reads them for GET /models/{name} and /metrics (LedgerReader.java)."""
        pid = os.getpid() if pid is None else pid
        lines = [HOST_LINE] if shared_host else []
        for nbytes, label, skews in entries:
            lines.append(f"{nbytes} {label}")
            lines += ["\t".join(["skew", *(" ".join(str(f).split()) for f in skew)]) for skew in skews]
        tmp = self.dir / f".{pid}.tmp"
        tmp.write_text("\n".join(lines) + "\n")
        tmp.replace(self.dir / str(pid))
