"""The life of one forked worker: set up as the fresh backend process MMS thinks it started, serve its one MMS
connection, and leave with the model's launcher.

Runs in the child right after the zygote's fork, once the zygote's own descriptors are closed.
"""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import sys
import threading
from argparse import Namespace
from collections.abc import Callable
from typing import NoReturn

from sklearn_mme.container import worker_output
from sklearn_mme.container.launcher_wire import close_fds
from sklearn_mme.container.procutil import become_subreaper, end_descendants
from sklearn_mme.container.settings import Wiring
from sklearn_mme.container.worker_state import WorkerState

log = logging.getLogger("mme.zygote")


def run(stdio: list[int], request: dict, launcher_pid: int, args: Namespace, client: socket.socket,
        state: WorkerState, reload: dict | None, ctl: socket.socket | None = None) -> NoReturn:
    """Become the model's worker and serve `client`; never returns. With `ctl` it is the model's
    loader, which forks the model's further workers (container/model_forks.py)."""

    def serve() -> int:
        own_descendants()
        follow(launcher_pid)
        os.dup2(stdio[0], 0)
        worker_output.start(stdio[1], stdio[2])  # fds 1 and 2: to the launcher's, bounded and decoded
        close_fds([fd for fd in stdio if fd > 2])
        os.chdir(request.get("cwd") or "/")
        os.environ.clear()
        os.environ.update(request.get("env") or {})
        # What a fresh interpreter would have taken from PYTHONPATH (MMS puts the model dir there).
        extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
        sys.path[1:1] = extra
        limit_worker_memory(Wiring.from_env().worker_memory_limit_bytes)  # checked by serve
        from sklearn_mme.container.backend import serve_connection
        from sklearn_mme.container.model_forks import ForkServer

        forker = ForkServer(ctl, launcher_pid) if ctl is not None else None
        return serve_connection(client, args, state, reload, forker)

    leave_fork(serve, "worker")


def leave_fork(body: Callable[[], int], what: str) -> NoReturn:
    """Run a forked child's `body` and leave with its exit code, whatever it raises: a fork must never return
    into the zygote's (or a loader's) code."""
    code = 1
    try:
        code = body()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # report, then leave the fork no matter what
        log.exception("%s failed", what)
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
            output = worker_output.current()
            if output is not None:
                output.drain()
        finally:
            try:
                end_descendants()
            finally:
                os._exit(code)


def reset_signals() -> None:
    """The zygote's handlers and wake-up fd mean nothing in a worker."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def own_descendants() -> None:
    """Whatever the model's code starts stays this worker's to end: in this worker's own process group,
    and re-parented here (not to the zygote, where no one could tell whose it was) when it double-forks
    or leaves the group. The worker ends them all when it exits (end_descendants)."""
    os.setpgid(0, 0)
    become_subreaper()


def follow(pid: int) -> None:
    """End this process, and all it started, when process `pid` (the model's launcher, MMS's handle on
    it) exits. The worker follows its launcher, not the zygote: a zygote restart must not end it."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # already gone
        end_descendants()
        os._exit(0)

    def watch() -> None:
        import select

        poller = select.poll()  # not select(): descriptors here can be numbered past FD_SETSIZE
        poller.register(fd, select.POLLIN)
        while not poller.poll():
            pass
        try:
            end_descendants()
        finally:
            os._exit(0)

    threading.Thread(target=watch, name="follow-launcher", daemon=True).start()


def limit_worker_memory(limit_bytes: int | None) -> None:
    """Cap what this worker may allocate beyond what it inherited, so a runaway model gets a
    MemoryError (answered 507) instead of drawing the kernel's OOM killer onto the container."""
    if not limit_bytes:
        return
    with open("/proc/self/status") as status:
        vm_data_kb = next(int(line.split()[1]) for line in status if line.startswith("VmData:"))
    _, hard = resource.getrlimit(resource.RLIMIT_DATA)
    resource.setrlimit(resource.RLIMIT_DATA, (vm_data_kb * 1024 + limit_bytes, hard))
