"""One copy of a model however many workers: further workers are forked from the worker that loaded it.

MMS opens one connection per worker to a model's socket and sends a load message on each. The zygote
forks the model's first worker (the "loader") from itself, with a control socket; the loader loads the
model, answers MMS, freezes its GC and says `R`. Each further connection the zygote accepts for that
model is handed to the loader (`F` + the connection and a memfd-backed WorkerState, over SCM_RIGHTS);
between requests the loader forks twice, so the new worker (a "sibling") is re-parented to the zygote
(a subreaper), which reaps it and keeps its OOM-kill bookkeeping exactly as for its own children. The
sibling answers MMS's load message from the model already in memory, so the model's pages (numpy
buffers, frozen objects) stay shared. The loader reports `P<pid>` per sibling, `E` when a fork failed.

Connections that arrive while the loader is still loading wait in the zygote. When the loader dies, the
next waiting connection gets a fresh loader from the zygote (which loads the model again).
"""

from __future__ import annotations

import gc
import logging
import os
import socket
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sklearn_mme.container.procutil import become_subreaper
from sklearn_mme.container.worker_state import WorkerState

if TYPE_CHECKING:
    from sklearn_mme.container.backend import Backend

log = logging.getLogger("mme.forks")
MAX_EARLY_EXITS = 1024


# -- the zygote's side ---------------------------------------------------------------------------
@dataclass
class ModelForks:
    """Per model, in the zygote: the loader's control socket and the connections waiting for it."""

    ctl: socket.socket | None = None
    ready: bool = False  # the loader has loaded the model and takes fork requests
    waiting: list[socket.socket] = field(default_factory=list)  # accepted before the model was loaded
    asked: deque[tuple[socket.socket, WorkerState]] = field(default_factory=deque)  # sent, pid not yet known
    buf: bytes = b""

    def new_loader(self) -> socket.socket:
        """A control channel for a loader about to be forked; returns the loader's end."""
        # Packets, not a stream: each fork request keeps its own pair of descriptors.
        self.ctl, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.ready = False
        self.buf = b""
        return child

    def ask(self, client: socket.socket) -> bool:
        """Hand an MMS connection to the loader to fork a sibling for it; False if the loader is gone."""
        assert self.ctl is not None
        state, fd = WorkerState.shareable()
        try:
            socket.send_fds(self.ctl, [b"F"], [client.fileno(), fd])
        except OSError:
            state.close()
            return False
        finally:
            os.close(fd)
        self.asked.append((client, state))
        return True

    def messages(self) -> list[bytes] | None:
        """Complete lines from the loader; None once it has gone (its control socket closed)."""
        assert self.ctl is not None
        try:
            data = self.ctl.recv(4096)
        except OSError:
            data = b""
        if not data:
            return None
        self.buf += data
        *lines, self.buf = self.buf.split(b"\n")
        return lines

    def loader_gone(self) -> None:
        """Fork requests the loader never answered leave with it: MMS sees those connections close."""
        if self.ctl is not None:
            self.ctl.close()
        self.ctl, self.ready, self.buf = None, False, b""
        while self.asked:
            client, state = self.asked.popleft()
            client.close()
            state.close()

    def close(self) -> None:
        """The model ends (or, in a freshly forked child, none of this is ours)."""
        self.loader_gone()
        for client in self.waiting:
            client.close()
        self.waiting.clear()


class EarlyExits:
    """Siblings the zygote reaped before their loader's `P<pid>` reached it (bounded)."""

    def __init__(self) -> None:
        self.status: dict[int, int] = {}

    def add(self, pid: int, status: int) -> None:
        if len(self.status) >= MAX_EARLY_EXITS:  # e.g. orphans of user code re-parented to the zygote
            self.status.pop(next(iter(self.status)))
        self.status[pid] = status

    def pop(self, pid: int) -> int | None:
        return self.status.pop(pid, None)


# -- the loader's side ---------------------------------------------------------------------------
class ForkServer:
    """In a model's loader: tells the zygote when the model is loaded, and forks siblings on request."""

    def __init__(self, ctl: socket.socket, launcher_pid: int) -> None:
        self.ctl = ctl
        self.launcher_pid = launcher_pid

    def fileno(self) -> int:
        return self.ctl.fileno()

    def loaded(self) -> None:
        """The model is in memory: freeze it out of the GC (so collections don't un-share its pages)."""
        gc.collect()
        gc.freeze()
        self._say(b"R\n")

    def _say(self, line: bytes) -> None:
        try:
            self.ctl.sendall(line)
        except OSError:
            pass

    def serve_request(self, backend: Backend, own_client: socket.socket) -> bool:
        """Fork a sibling for the connection the zygote sent; False when the zygote has hung up."""
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.ctl, 16, 2)
        except OSError:
            return False
        if not msg:
            return False
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            self._say(b"E\n")
            return True
        client_fd, state_fd = fds
        gc.freeze()  # what this worker allocated since serving requests stays shared too
        sys.stdout.flush()
        sys.stderr.flush()
        # The loader keeps the model code's orphans (worker_process.own_descendants), but the sibling
        # must be re-parented to the zygote: be no subreaper while the intermediate exits.
        become_subreaper(False)
        try:
            middle = os.fork()
        except OSError:
            middle = -1
            self._say(b"E\n")
        if middle == 0:
            self._middle(backend, own_client, client_fd, state_fd)  # never returns
        os.close(client_fd)
        os.close(state_fd)
        if middle > 0:
            os.waitpid(middle, 0)
        become_subreaper()
        return True

    def _middle(self, backend: Backend, own_client: socket.socket, client_fd: int, state_fd: int) -> None:
        """The intermediate: fork the sibling, report its pid, leave so the zygote adopts it."""
        try:
            try:
                pid = os.fork()
            except OSError:
                self._say(b"E\n")
                os._exit(1)
            if pid == 0:
                self._sibling(backend, own_client, client_fd, state_fd)
            self._say(b"P%d\n" % pid)
        finally:
            os._exit(0)

    def _sibling(self, backend: Backend, own_client: socket.socket, client_fd: int, state_fd: int) -> None:
        """Serve `client_fd` with the model already in this process; never returns."""
        from sklearn_mme.container.worker_process import follow, leave_fork, own_descendants

        def serve() -> int:
            own_descendants()
            self.ctl.close()
            own_client.close()  # the loader's connection: closing our copy leaves it open there
            follow(self.launcher_pid)
            client = socket.socket(fileno=client_fd)
            backend.shared = WorkerState.attach(state_fd)
            backend.forker = None
            backend.preload = True  # MMS's load_model then answers from the loaded service
            backend.out = backend.err = None
            backend.start_worker(client)  # exits via SystemExit when MMS hangs up
            return 0

        leave_fork(serve, "sibling worker")
