"""Counts of what happened to the shared host processes, for GET /metrics (MME_BACKEND=hosts).

A host that dies, and a model that leaves the hosts for a process of its own, change how densely the container
packs models, and an operator should see it without reading logs. The zygote counts them in a file beside the
memory ledger (`host-events`: one "FAMILY LABEL COUNT" line each), replaced by a rename so a reader never
sees half of it; our MMS plugin reads it at scrape time (LedgerReader.java), as it reads `zygote-restarts`.
A restarted zygote goes on from the counts on file, so the counters never go back.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

log = logging.getLogger("mme.hosts")
FILE = "host-events"
# Why a hosted model got a process of its own: its predicts held its host past MME_HOST_SLOW_MS, or its
# request was in hand when its host died.
MOVE_REASONS = ("slow", "host_died")
# Why a host was replaced (recycling an emptied host is routine and not counted): the OOM killer took it, we
# killed it because a deleted model's request held it, or it died otherwise (a signal, an exit).
HOST_CAUSES = ("oom_kill", "stuck", "died")


class HostEvents:
    """Written at once with every count (zero until it happens), so the series exist from the start and only
    where there are hosts."""

    def __init__(self, directory: str | Path | None) -> None:
        self.path = Path(directory) / FILE if directory else None
        self.counts: Counter[tuple[str, str]] = Counter()
        for reason in MOVE_REASONS:
            self.counts[("moves", reason)] = 0
        for cause in HOST_CAUSES:
            self.counts[("host_replacements", cause)] = 0
        if self.path is not None:
            try:
                for line in self.path.read_text().splitlines():
                    family, label, count = line.split()
                    self.counts[(family, label)] = int(count)
            except (OSError, ValueError):
                pass  # none yet, or unreadable: count from zero
        self._write()

    def model_moved(self, reason: str) -> None:
        self.counts[("moves", reason)] += 1
        self._write()

    def host_replaced(self, cause: str) -> None:
        self.counts[("host_replacements", cause)] += 1
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        text = "".join(f"{f} {lab} {n}\n" for (f, lab), n in sorted(self.counts.items()))
        tmp = self.path.with_name(f".{FILE}.tmp")
        try:
            tmp.write_text(text)
            tmp.replace(self.path)
        except OSError as exc:  # a metric lost is not worth failing the move or the reap for
            log.warning("could not write %s: %s", self.path, exc)
