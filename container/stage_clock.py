"""Per-request stage timestamps of a worker, for the bench's latency breakdown (`MME_STAGE_LOG`).

Off unless serve was given MME_STAGE_LOG. Then every answered invoke appends one line to that file: the
worker's pid and the CLOCK_MONOTONIC nanoseconds at each stage below. time.perf_counter_ns reads the same
clock in every process on Linux, so `python -m bench --latency` lines them up with its own timestamps
taken around each request and splits the request into: client -> worker, each stage, worker -> client.
"""

from __future__ import annotations

import os
import time

from sklearn_mme.container.settings import Wiring

# When the socket became readable, the message was decoded, the handler was entered and left, and the
# answer was written to MMS.
STAGES = ("readable", "decoded", "handle_in", "handle_out", "sent")
READABLE, DECODED, HANDLE_IN, HANDLE_OUT, SENT = range(len(STAGES))


class StageClock:
    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.marks = [0] * len(STAGES)

    def mark(self, stage: int) -> None:
        self.marks[stage] = time.perf_counter_ns()

    def flush(self) -> None:
        """One line per request, in one write (O_APPEND keeps lines of several workers whole)."""
        os.write(self._fd, f"{os.getpid()} {' '.join(map(str, self.marks))}\n".encode())
        self.marks = [0] * len(STAGES)


def from_path(path: str | None) -> StageClock | None:
    return StageClock(path) if path else None


# A model load's steps (`python -m bench --load-breakdown`): the zygote, the hosts and our MMS plugin
# (LoadClock.java) each append "load STAGE NANOS MODEL" lines to the same file when MME_STAGE_LOG is set.
_load_fd: int | None = None


def load_mark(model: str, stage: str) -> None:
    """One step of `model`'s load, now; free when MME_STAGE_LOG is unset."""
    global _load_fd
    if _load_fd is None:
        path = Wiring.from_env().stage_log
        _load_fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644) if path else -1
    if _load_fd >= 0:
        try:
            os.write(_load_fd, f"load {stage} {time.perf_counter_ns()} {model}\n".encode())
        except OSError:
            pass  # a timing aid: never a reason for a load to fail


def forget_inherited() -> None:
    """In a fresh fork that closed the descriptors it inherited: open the stage log again when needed."""
    global _load_fd
    _load_fd = None
