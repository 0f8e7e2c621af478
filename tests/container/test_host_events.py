"""The zygote's host-event counts (container/host_events.py) and a shared host's ledger record: the files
our MMS plugin reads for GET /metrics and GET /models/{name} (end to end: tests/integration/test_hosts.py)."""

from __future__ import annotations

import os
from pathlib import Path

from sklearn_mme.container.host_events import FILE, HostEvents
from sklearn_mme.container.ledger import HOST_LINE, MemoryLedger


def _lines(directory: Path) -> list[str]:
    return (directory / FILE).read_text().splitlines()


def test_every_series_is_on_file_from_the_start_at_zero(tmp_path: Path) -> None:
    HostEvents(tmp_path)
    assert _lines(tmp_path) == ["host_replacements died 0", "host_replacements oom_kill 0",
                                "host_replacements stuck 0", "moves host_died 0", "moves slow 0"]


def test_counts_go_on_from_the_file_when_the_zygote_restarts(tmp_path: Path) -> None:
    first = HostEvents(tmp_path)
    first.model_moved("slow")
    first.model_moved("slow")
    first.host_replaced("oom_kill")
    again = HostEvents(tmp_path)  # a restarted zygote
    again.model_moved("host_died")
    assert "moves slow 2" in _lines(tmp_path) and "host_replacements oom_kill 1" in _lines(tmp_path)
    assert "moves host_died 1" in _lines(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [FILE]  # written by a rename: no temporary file left


def test_without_a_ledger_directory_it_counts_in_memory_only(tmp_path: Path) -> None:
    events = HostEvents(None)
    events.host_replaced("died")
    assert events.counts[("host_replacements", "died")] == 1
    assert list(tmp_path.iterdir()) == []


def test_a_shared_hosts_record_says_so_and_its_bytes_still_add_up(tmp_path: Path) -> None:
    ledger = MemoryLedger(tmp_path)
    ledger.record_all([(1000, "a", ()), (234, "b", [("scikit-learn", "1.4.2", "1.5.2")])], shared_host=True)
    ledger.record(50, "own", pid=1)  # pid 1 is alive: a model's own process
    lines = (tmp_path / str(os.getpid())).read_text().splitlines()
    assert lines[0] == HOST_LINE and lines[1] == "1000 a"
    assert (tmp_path / "1").read_text().splitlines() == ["50 own"]
    assert ledger.total() == 1284
