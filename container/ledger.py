"""Container-wide accounting of model memory, shared by every backend process through a directory.

Each backend worker owns one model and records its measured bytes in `<dir>/<pid>`; a load sums the
records of live processes to decide whether one more model fits the budget (else 507, as SageMaker
expects so it can unload something and retry). Files of dead processes are ignored and swept, so a
killed worker frees its share without any coordinator.
"""

from __future__ import annotations

import os
from pathlib import Path


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
            if not _alive(pid):
                entry.unlink(missing_ok=True)
                continue
            try:
                total += int(entry.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        return total

    def record(self, nbytes: int, label: str, pid: int | None = None) -> None:
        pid = os.getpid() if pid is None else pid
        tmp = self.dir / f".{pid}.tmp"
        tmp.write_text(f"{nbytes} {label}\n")
        tmp.replace(self.dir / str(pid))
