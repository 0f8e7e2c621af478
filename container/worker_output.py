"""A worker's stdout/stderr, drained by the worker itself so a model's output never slows its requests.

MMS's Java front reads a worker's output line by line (first from the launcher's stdout/stderr, after the
load from per-worker FIFOs), and gets superlinearly slow on long or non-UTF-8 lines: one 2 MiB line took
13 s, and a worker writing more than MMS took in blocked in write() until its request timed out. Here fds 1
and 2 of the worker are pipes that a thread of the worker drains at once. It decodes what it reads as UTF-8
(with replacement), cuts it into lines of at most LINE_MAX bytes, and writes each line without blocking: a
line the reader has no room for is dropped and counted, and the count is written once there is room.

Lines of at most PIPE_BUF bytes are written whole or not at all, so MMS never sees half a line. A C
extension that writes more than the pipe holds (1 MiB where the kernel allows) while holding the GIL would
wait for this thread, which needs the GIL: the one way a model's output can still block it.
"""

from __future__ import annotations

import codecs
import fcntl
import os
import select
import stat
import threading
import time

LINE_MAX = select.PIPE_BUF  # 4096 on Linux, the newline included
PIPE_SIZE = 1 << 20
READ_SIZE = 1 << 16
_F_SETPIPE_SZ = 1031

_current: WorkerOutput | None = None


def _grow(fd: int) -> None:
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:  # over /proc/sys/fs/pipe-max-size, or not a pipe: keep what it has
        pass


def _own_nonblocking(fd: int) -> int:
    """A non-blocking descriptor of our own for what `fd` refers to: a pipe or FIFO reopened through /proc
    gets a file description of its own, so O_NONBLOCK does not leak to others writing to it (the zygote,
    the model's other workers); anything else gets a dup, left blocking."""
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):  # a file reopened would be written from its start
        return os.dup(fd)
    try:
        own = os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return os.dup(fd)
    _grow(own)
    return own


class _Stream:
    """One of the worker's two output streams: its pipe, its target, its partial line and drop count."""

    def __init__(self, fd: int, target: int) -> None:
        self.read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
        _grow(write_fd)
        os.dup2(write_fd, fd)  # fd 1 or 2 of the worker now goes through this pipe
        os.close(write_fd)
        os.set_blocking(self.read_fd, False)
        self.target = _own_nonblocking(target)
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self.pending = b""
        self.dropped = 0

    def retarget(self, target: int) -> None:
        old, self.target = self.target, target
        os.close(old)

    def pump(self) -> int:
        """Move what the pipe holds to the target: how many bytes it read, -1 at EOF."""
        try:
            data = os.read(self.read_fd, READ_SIZE)
        except BlockingIOError:
            return 0
        self.pending += self.decoder.decode(data, final=not data).encode("utf-8")
        *lines, self.pending = self.pending.split(b"\n")
        for line in lines:
            self._emit(line)
        while len(self.pending) >= LINE_MAX:
            cut = _boundary(self.pending, LINE_MAX - 1)
            self._emit(self.pending[:cut])
            self.pending = self.pending[cut:]
        if not data and self.pending:
            self._emit(self.pending)
            self.pending = b""
        return len(data) if data else -1

    def _emit(self, line: bytes) -> None:
        while len(line) >= LINE_MAX:  # a line already longer than a pipe write can keep whole
            cut = _boundary(line, LINE_MAX - 1)
            self._emit(line[:cut])
            line = line[cut:]
        if self.dropped and not self._write(
                b"[mme] %d bytes of the model's output dropped: MMS read it too slowly\n" % self.dropped):
            self.dropped += len(line) + 1
            return
        self.dropped = 0
        if not self._write(line + b"\n"):
            self.dropped += len(line) + 1

    def _write(self, line: bytes) -> bool:
        try:
            return os.write(self.target, line) == len(line)
        except OSError:  # full (EAGAIN), or MMS has gone (EPIPE): the line is lost either way
            return False


def _boundary(data: bytes, limit: int) -> int:
    """The largest cut at or before `limit` that does not split a UTF-8 character."""
    cut = limit
    while cut > 0 and (data[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut or limit


class WorkerOutput:
    """Fds 1 and 2 of this process through pipes drained by a daemon thread into `stdout`/`stderr`."""

    def __init__(self, stdout: int, stderr: int) -> None:
        self.pid = os.getpid()
        self.streams = {1: _Stream(1, stdout), 2: _Stream(2, stderr)}
        self.lock = threading.Lock()
        self.poller = select.poll()  # not select(): descriptors here can be numbered past FD_SETSIZE
        for stream in self.streams.values():
            self.poller.register(stream.read_fd, select.POLLIN)
        threading.Thread(target=self._run, name="worker-output", daemon=True).start()

    def _run(self) -> None:
        by_fd = {s.read_fd: s for s in self.streams.values()}
        while True:
            for fd, _ in self.poller.poll():
                with self.lock:
                    if by_fd[fd].pump() < 0:
                        self.poller.unregister(fd)

    def retarget(self, paths: tuple[str, str]) -> None:
        """Send fds 1 and 2 to MMS's per-worker FIFOs from now on (opened as MMS's own worker does:
        blocking until MMS has opened them for reading)."""
        for fd, path in zip((1, 2), paths, strict=True):
            with open(path, "wb", buffering=0) as fifo:
                target = _own_nonblocking(fifo.fileno())
            with self.lock:
                self.streams[fd].retarget(target)

    def drain(self, timeout_s: float = 0.2) -> None:
        """Pass on what is already written (a worker about to exit: its last words, e.g. a traceback)."""
        deadline = time.monotonic() + timeout_s
        for stream in self.streams.values():
            while time.monotonic() < deadline:
                with self.lock:
                    if stream.pump() <= 0:
                        break


def start(stdout: int, stderr: int) -> WorkerOutput:
    """Route this (freshly forked) worker's fds 1 and 2 through a drained pipe into `stdout`/`stderr`."""
    global _current
    if _current is not None and _current.pid != os.getpid():
        # Forked from a worker that had its own: its pipes' read ends are that worker's business.
        for stream in _current.streams.values():
            os.close(stream.read_fd)
            os.close(stream.target)
    _current = WorkerOutput(stdout, stderr)
    return _current


def current() -> WorkerOutput | None:
    """This process's WorkerOutput, if it made one (not one inherited through a fork)."""
    return _current if _current is not None and _current.pid == os.getpid() else None
