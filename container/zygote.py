"""Pre-warmed fork server: the one backend server behind every model MMS loads.

Vanilla MMS starts a fresh interpreter per model ("backend server"), which re-imports numpy, scipy
and scikit-learn (~92 MB and ~1.1 s per model) and then forks one worker per connection. Here the
zygote imports all that once, warms it with a real load and predict, freezes the GC (so collections
in children don't write to, and un-share, the inherited pages), and then plays the backend server
for every model: it binds each model's socket, tells MMS "MMS worker started.", and forks a worker
straight from itself for each connection MMS opens. A model costs only the pages its worker touches.

Each model's launcher (MMS's per-model 'python') registers the model over a Unix socket
(launcher_wire.py); when the launcher disappears (MMS kills it on DELETE) the model's socket and workers
go, with every process the model's code started (each worker is a subreaper of its own process group,
worker_process.own_descendants). Workers follow their launcher, not the zygote: when the zygote dies,
they keep serving their MMS connections (`serve` adopts and reaps them), each launcher registers its
model again with the restarted zygote, which serves new connections with fresh workers.
What the zygote plays of MMS's backend server is in mms_protocol.py, what runs after each fork in
worker_process.py, and the imports and warm-up before any fork in warmup.py.

The zygote also keeps its own copy of every worker's MMS connection: when the kernel's OOM killer takes
a worker in the middle of a request, the zygote answers that request 507 and forks a replacement that
reloads the model on the same connection (see Worker and container/worker_state.py).
"""

from __future__ import annotations

import argparse
import errno
import gc
import logging
import os
import resource
import selectors
import signal
import socket
import sys
import time
from dataclasses import dataclass, field

from sklearn_mme.container import launcher_wire, mms_protocol, stage_clock, worker_process
from sklearn_mme.container.hosts import Hosts
from sklearn_mme.container.ledger import MemoryLedger
from sklearn_mme.container.model_forks import EarlyExits, ModelForks
from sklearn_mme.container.oom import oom_kill_count
from sklearn_mme.container.procutil import (
    become_subreaper,
    children,
    die_with_parent,
    end_descendants,
    end_tree,
    kill_group,
)
from sklearn_mme.container.settings import HANDLER, Wiring
from sklearn_mme.container.warmup import preload
from sklearn_mme.container.worker_state import WorkerState

log = logging.getLogger("mme.zygote")
OOM_MESSAGE = "Insufficient memory: the model's worker was killed by the out-of-memory killer"


@dataclass
class Slot:
    """One model MMS asked for: its launcher, its socket, its live workers, and its stdio (`fds`) until its
    first connection is served: the launcher keeps them, and gives them again when asked (_stdio)."""

    conn: socket.socket
    launcher_pid: int
    request: dict
    fds: list[int]
    args: argparse.Namespace
    listener: socket.socket | None = None
    workers: set[int] = field(default_factory=set)
    ended: bool = False
    # What its launcher's exit waits on once it is ended by a signal (an unload): ("host", id) until that
    # connection's host has dropped the model, ("worker", pid) until that worker is reaped.
    pending: set[tuple[str, int]] = field(default_factory=set)
    exit_status: int | None = None
    released: bool = False  # its launcher was told to exit (or went) and its connection closed
    forks: ModelForks = field(default_factory=ModelForks)  # its loader and its waiting connections
    quiet: bool = False  # its launcher let its stdio go (hosted): a worker of its own writes to ours


@dataclass
class Worker:
    """A forked worker. The zygote keeps its own copy of the worker's MMS connection, so that when the
    OOM killer takes the worker mid-request the request can still be answered (507) and a replacement
    can carry on serving on the same connection; other deaths just close it, and MMS restarts."""

    slot: Slot
    conn: socket.socket
    state: WorkerState


class Zygote:
    def __init__(self, sock_path: str) -> None:
        self.sock_path = sock_path
        self.sel = selectors.DefaultSelector()
        self.slots: dict[int, Slot] = {}  # by launcher connection fd
        self.workers: dict[int, Worker] = {}
        self.oom_kills = oom_kill_count()
        self.listener: socket.socket | None = None
        self.wake_r, self.wake_w = socket.socketpair()
        # Given up when the descriptors run out, to accept a launcher and refuse it at once (else it would
        # wait in the backlog and MMS out its 60 s start-up timeout).
        self.spare_fd: int | None = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        self.stopping = False
        self.early_exits = EarlyExits()
        state_dir = Wiring.from_env().state_dir
        self.ledger = MemoryLedger(state_dir) if state_dir else None
        self.hosts = Hosts.from_env(self)  # MME_BACKEND=hosts: small models share host processes (hosts.py)

    def start(self) -> None:
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.sock_path + ".tmp")
        self.listener.listen(512)
        os.rename(self.sock_path + ".tmp", self.sock_path)  # appears only when ready to fork
        self.sel.register(self.listener, selectors.EVENT_READ, ("accept", None))
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)
        if self.hosts is not None:
            self.hosts.start()

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> None:
        while not self.stopping:
            for key, _ in self.sel.select(timeout=self._select_timeout()):
                kind, slot = key.data
                if slot is not None and slot.ended and (kind != "launcher" or slot.released):
                    # One batch can hold a launcher's EOF and a connect to its model's socket: the EOF
                    # ended the model earlier in this batch, so its other events are stale. An ended
                    # model's launcher, still waiting for its exit status, may yet go or be signalled.
                    continue
                if kind == "accept":
                    self._accept_launcher()
                elif kind == "wake":
                    try:
                        while self.wake_r.recv(512):
                            pass
                    except BlockingIOError:
                        pass
                elif kind == "launcher":
                    self._from_launcher(slot)
                elif kind == "model":
                    self._fork_worker(slot)
                elif kind == "loader":
                    self._from_loader(slot)
                elif kind == "host":
                    self.hosts.from_host(slot)
            self._tick()
        self.shutdown()

    def _select_timeout(self) -> float:
        """At most 1 s (reaping), less when a host is due to be judged stuck."""
        deadline = self.hosts.next_deadline() if self.hosts is not None else None
        return 1.0 if deadline is None else min(1.0, max(0.0, deadline - time.monotonic()))

    def _tick(self) -> None:
        if self.hosts is not None:
            self.hosts.check_stuck()
        self._reap()

    # -- launchers ---------------------------------------------------------------------------
    def _accept_launcher(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                self._refuse_for_room()
            return
        conn.settimeout(10)
        try:
            pid = launcher_wire.peer_pid(conn)
            request, fds = launcher_wire.read_registration(conn)
        except (OSError, ValueError) as exc:
            log.warning("bad launcher request: %s", exc)
            self._refuse(conn)
            return
        args = mms_protocol.worker_args(request.get("argv") or [])
        if args is None:
            log.warning("launcher sent arguments MMS's worker would not take: %.300s", request.get("argv"))
            try:
                os.write(fds[2], b"the model's arguments were refused by MMS's worker parser\n")
            except OSError:
                pass
            launcher_wire.close_fds(fds)
            self._refuse(conn)
            return
        conn.settimeout(None)
        stage_clock.load_mark(args.model_name, "z_registered")
        bound = socket.socket(fileno=fds.pop()) if len(fds) == 4 else None  # the launcher bound it
        slot = Slot(conn=conn, launcher_pid=pid, request=request, fds=fds, args=args,
                    quiet=bool(request.get("quiet")))
        try:
            slot.listener = bound or self._bind(args.sock_name)
        except OSError as exc:
            self._write(slot, f"cannot listen on {args.sock_name}: {exc}\n", err=True)
            self._end(slot, status=1 << 8)
            return
        self.slots[conn.fileno()] = slot
        self.sel.register(conn, selectors.EVENT_READ, ("launcher", slot))
        self.sel.register(slot.listener, selectors.EVENT_READ, ("model", slot))
        if bound is not None:  # MMS heard from the launcher that the model started, and may be connecting
            if self.hosts is not None:
                self.hosts.prefetch(slot)
        elif not request.get("adopt"):
            # What MMS waits for on the backend server's stdout before it connects.
            # Stamped before the write: MMS may read the line and stamp its next step before we run again.
            stage_clock.load_mark(args.model_name, "z_handshake")
            self._write(slot, mms_protocol.handshake(args.sock_name, pid))
            if self.hosts is not None:
                self.hosts.prefetch(slot)  # its host loads it while MMS connects
        else:
            self._drop_stdio(slot)  # the model's workers, if any, run on: asked for again if needed

    def _refuse_for_room(self) -> None:
        """Out of descriptors: take the waiting launcher with the spare one, and refuse it (MMS fails the load
        at once); our plugin's check (container/java Descriptors) keeps this a last resort."""
        assert self.listener is not None
        if self.spare_fd is not None:
            os.close(self.spare_fd)
            self.spare_fd = None
        try:
            conn, _ = self.listener.accept()
        except OSError:
            conn = None
        if conn is not None:
            log.warning("out of file descriptors: a model's registration was refused")
            self._refuse(conn)
        try:
            self.spare_fd = os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            pass  # taken meanwhile: the next shortage finds no spare, and the launcher waits as before

    @staticmethod
    def _refuse(conn: socket.socket) -> None:
        """End a registration as a failed start (exit status 2): a bare close would read as a zygote
        restart, and the launcher would register again and again."""
        try:
            conn.sendall(launcher_wire.exit_message(2 << 8))
        except OSError:
            pass
        conn.close()

    @staticmethod
    def _bind(path: str) -> socket.socket:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.listen(128)
        return sock

    @staticmethod
    def _write(slot: Slot, text: str, err: bool = False) -> None:
        try:
            os.write(slot.fds[2 if err else 1], text.encode())
        except OSError:
            pass

    @staticmethod
    def _drop_stdio(slot: Slot) -> None:
        """Let the model's stdio go: three descriptors per model would bound the models one zygote keeps
        (nofile); its launcher keeps them, and _stdio asks for them again."""
        launcher_wire.close_fds(slot.fds)
        slot.fds = []

    def _hosted(self, slot: Slot) -> None:
        """The model's connection went to a host, whose output goes to ours: its stdio is needed no more."""
        self._drop_stdio(slot)
        # MMS is connected, so past its start-up check: the EOF its stdout reader then meets only ends the
        # reader (WorkerLifeCycle.ReaderThread's setSuccess(false) is read by startBackendServer alone).
        if not slot.quiet:
            slot.quiet = True
            try:
                slot.conn.sendall(launcher_wire.QUIET)
            except OSError:
                pass  # the launcher is going: its EOF ends the model

    def _stdio(self, slot: Slot) -> bool:
        """The model's stdio in `slot.fds`, asked again from its launcher when let go; False when the
        launcher is gone or does not answer (the model is ending)."""
        if slot.fds:
            return True
        if slot.quiet:  # as when it was hosted: its output goes to serve's (ours)
            fds: list[int] = []
            try:
                fds.append(os.open(os.devnull, os.O_RDONLY))
                fds += [os.dup(1), os.dup(2)]
            except OSError as exc:
                launcher_wire.close_fds(fds)
                log.warning("no descriptors for %s's worker: %s", slot.args.model_name, exc)
                return False
            slot.fds = fds
            return True
        try:
            slot.fds, other = launcher_wire.ask_stdio(slot.conn)
        except (OSError, ValueError) as exc:
            log.warning("could not get %s's stdio back from its launcher: %s", slot.args.model_name, exc)
            return False
        sig = launcher_wire.signal_request(other)
        if sig is not None:  # a signal forwarded while we asked: the model dies of it, as it would have
            self._end(slot, status=sig, sig=sig)
            return False
        return True

    def _from_launcher(self, slot: Slot) -> None:
        try:
            data = slot.conn.recv(256)
        except OSError:
            data = b""
        if not data:  # launcher gone (MMS kills it on DELETE or after a failure): the model goes
            self._end(slot, status=None)
            return
        sig = launcher_wire.signal_request(data)
        if sig == signal.SIGTERM:
            # What an unload sends (our MMS plugin), once no request MMS waits for is left in the model's
            # workers: one still in a request was given up on (its response timeout), so all are killed,
            # as they were when MMS killed the launcher; the launcher exits once they are reaped.
            self._end(slot, status=sig, sig=signal.SIGKILL)
        elif sig is not None:
            self._end(slot, status=sig, sig=sig)  # the model dies of the signal it was sent

    def _end(self, slot: Slot, status: int | None, sig: int = signal.SIGKILL) -> None:
        """Take a model down: its workers, its socket, its stdio; report `status` to the launcher.

        Ended by a signal (MMS's DELETE sends SIGTERM), the launcher is answered only once the model's hosts
        have dropped it and its own workers are reaped, so the DELETE's answer finds the memory ledger
        without the model: SageMaker retries a load that got 507 at once, and must not meet its bytes."""
        if slot.ended:  # its launcher went (MMS gave up waiting) or was signalled again: no more waiting
            self._stop_workers(slot, signal.SIGKILL)
            if status is None:
                slot.exit_status = None
            self._release(slot)
            return
        slot.ended = True
        if self.hosts is not None:
            self.hosts.end_slot(slot)
        self._stop_workers(slot, sig)
        self._drop_loader(slot)
        slot.forks.close()
        self._close_listener(slot)
        slot.exit_status = status
        if status is None or self.stopping or not slot.pending:
            self._release(slot)

    def _stop_workers(self, slot: Slot, sig: int) -> None:
        slot.pending.update(("worker", pid) for pid in slot.workers)
        for pid in list(slot.workers):
            if sig == signal.SIGKILL:
                end_tree(pid)  # and what its model started: a worker ends that only when it exits itself
                continue
            try:  # e.g. SIGTERM: the worker drains, then ends what it started as it exits
                os.kill(pid, sig)
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass

    def _close_listener(self, slot: Slot) -> None:
        if slot.listener is not None:
            try:
                self.sel.unregister(slot.listener)
            except (KeyError, ValueError):
                pass
            slot.listener.close()
            try:
                os.unlink(slot.args.sock_name)
            except OSError:
                pass
            slot.listener = None

    def settled(self, slot: Slot, what: tuple[str, int]) -> None:
        """One thing an ended model's launcher waits on is done (hosts.py: a host's ack; _reap: a worker)."""
        slot.pending.discard(what)
        if slot.ended and not slot.pending:
            self._release(slot)

    def _release(self, slot: Slot) -> None:
        """The launcher may exit (with the model's status, if it is still there to hear it)."""
        if slot.released:
            return
        slot.released = True
        slot.pending.clear()
        if slot.exit_status is not None:
            try:
                slot.conn.sendall(launcher_wire.exit_message(slot.exit_status))
            except OSError:
                pass
        self.slots.pop(slot.conn.fileno(), None)
        try:
            self.sel.unregister(slot.conn)
        except (KeyError, ValueError):
            pass
        slot.conn.close()
        launcher_wire.close_fds(slot.fds)
        slot.fds = []

    # -- workers -----------------------------------------------------------------------------
    def _fork_worker(self, slot: Slot, client: socket.socket | None = None,
                     reload: dict | None = None) -> None:
        """A worker for a new MMS connection, or (`reload`) a replacement on a killed worker's one.
        A new connection to a model already loaded is served by a fork of its loader (model_forks.py)."""
        if client is None:
            if slot.listener is None:  # the model ended: nothing to accept on
                return
            try:
                client, _ = slot.listener.accept()
            except OSError:
                return
            if self.hosts is not None and self.hosts.take(slot, client):
                self._hosted(slot)
                return
            if slot.forks.ctl is not None:
                if not (slot.forks.ready and slot.forks.ask(client)):
                    slot.forks.waiting.append(client)  # the loader is loading: forked once it has
                return
        if not self._stdio(slot):
            client.close()  # MMS sees the connection close; the launcher's end ends the model
            return
        ctl = None
        if slot.forks.ctl is None:  # this worker loads the model and forks the model's further workers
            ctl = slot.forks.new_loader()
            self.sel.register(slot.forks.ctl, selectors.EVENT_READ, ("loader", slot))
        state = WorkerState()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_worker(slot, client, state, reload, ctl)  # never returns
        if ctl is not None:
            ctl.close()
        self._drop_stdio(slot)  # the worker has them now
        slot.workers.add(pid)
        self.workers[pid] = Worker(slot, client, state)

    def _from_loader(self, slot: Slot) -> None:
        """The loader's news: loaded (`R`), a sibling's pid (`P<pid>`), a failed fork (`E`), or gone."""
        lines = slot.forks.messages()
        if lines is None:
            self._drop_loader(slot)
            if slot.forks.waiting and slot.listener is not None and not self.stopping:
                self._fork_worker(slot, slot.forks.waiting.pop(0))  # the next loader
            return
        for line in lines:
            if line == b"R":
                slot.forks.ready = True
                waiting, slot.forks.waiting = slot.forks.waiting, []
                for client in waiting:
                    if not slot.forks.ask(client):
                        slot.forks.waiting.append(client)
            elif line == b"E" and slot.forks.asked:
                client, state = slot.forks.asked.popleft()
                client.close()  # MMS sees the connection close and tries again
                state.close()
            elif line.startswith(b"P") and line[1:].isdigit() and slot.forks.asked:
                pid = int(line[1:])
                client, state = slot.forks.asked.popleft()
                slot.workers.add(pid)
                worker = self.workers[pid] = Worker(slot, client, state)
                status = self.early_exits.pop(pid)
                if status is not None:  # reaped before we knew it
                    self.workers.pop(pid)
                    slot.workers.discard(pid)
                    self._worker_ended(pid, worker, status)

    def _drop_loader(self, slot: Slot) -> None:
        if slot.forks.ctl is not None:
            try:
                self.sel.unregister(slot.forks.ctl)
            except (KeyError, ValueError):
                pass
        slot.forks.loader_gone()

    def _become_worker(self, slot: Slot, client: socket.socket, state: WorkerState,
                       reload: dict | None, ctl: socket.socket | None = None) -> None:
        """In the child: drop all the zygote holds but this model's stdio, then serve (never returns)."""
        try:
            worker_process.reset_signals()
            # Other workers' connections must not stay open here, or MMS would not see them close.
            for worker in self.workers.values():
                worker.conn.close()
                worker.state.close()
            # Close every zygote socket through its object, so no stale object closes a reused fd later.
            for other in list(self.slots.values()):
                other.forks.close()  # other connections and loaders' channels: not this worker's
                other.conn.close()
                if other.listener is not None:
                    other.listener.close()
                if other is not slot:
                    launcher_wire.close_fds(other.fds)
            if self.hosts is not None:
                self.hosts.close_in_child()
            for sock in (self.listener, self.wake_r, self.wake_w):
                if sock is not None:
                    sock.close()
            if self.spare_fd is not None:
                os.close(self.spare_fd)
            self.sel.close()
        except BaseException:  # leave the fork no matter what
            log.exception("worker set-up failed")
            os._exit(1)
        worker_process.run(slot.fds, slot.request, slot.launcher_pid, slot.args, client, state, reload, ctl)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.hosts is not None and self.hosts.reaped(pid, status):
                continue
            worker = self.workers.pop(pid, None)
            if worker is not None:
                worker.slot.workers.discard(pid)
                self._worker_ended(pid, worker, status)
                self.settled(worker.slot, ("worker", pid))
            else:
                self.early_exits.add(pid, status)  # maybe a sibling whose pid its loader has yet to report

    def forget_record(self, pid: int) -> None:
        """A reaped child's memory-ledger record (a killed worker or host cannot remove its own)."""
        if self.ledger is not None:
            self.ledger.forget(pid)

    def _remove_files(self, pid: int, worker: Worker) -> None:
        """What a worker leaves behind when it is killed (its own clean-up runs only on a clean exit): its
        memory ledger record and MMS's stdout/stderr FIFOs in the run directory."""
        self.forget_record(pid)
        message = worker.state.load_message()
        io_fd = message.get("ioFileDescriptor") if message else None
        tmp_dir = getattr(worker.slot.args, "tmp_dir", None)
        if io_fd and tmp_dir:
            name = io_fd.decode("utf-8", "replace") if isinstance(io_fd, bytes) else str(io_fd)
            for suffix in ("-stdout", "-stderr"):
                try:
                    os.remove(os.path.join(tmp_dir, name + suffix))
                except OSError:
                    pass

    def _end_orphans(self, pgid: int) -> None:
        """A worker killed outright (it ends what its model started only when it exits itself) leaves
        those processes to us, the next subreaper: end the ones still in its process group, with all
        below them. Ones that had left the group cannot be told from other orphans (see README)."""
        for child in children(os.getpid()):
            try:
                if child not in self.workers and os.getpgid(child) == pgid:
                    end_tree(child)
            except ProcessLookupError:
                pass
        kill_group(pgid)

    def _worker_ended(self, pid: int, worker: Worker, status: int) -> None:
        """OOM-killed mid-request: answer 507 and carry on with a replacement. Otherwise close our copy
        of the connection, so MMS sees the worker gone, reconnects, and we fork a fresh worker then."""
        self._end_orphans(pid)
        self._remove_files(pid, worker)
        oom_kills, self.oom_kills = self.oom_kills, oom_kill_count()
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        reload = worker.state.load_message() if worker.state.was_busy() else None
        worker.state.close()
        slot = worker.slot
        if killed and reload is not None and self.oom_kills > oom_kills and slot.listener is not None \
                and not self.stopping:
            log.warning("worker %d of %s was killed by the OOM killer mid-request: answering 507",
                        pid, slot.args.model_name)
            try:
                worker.conn.sendall(mms_protocol.error_frame(507, OOM_MESSAGE))
            except OSError:
                worker.conn.close()
                return
            self._fork_worker(slot, worker.conn, reload)
        else:
            worker.conn.close()

    def shutdown(self, drain_s: float = 25.0) -> None:
        """Drain: no new workers; each worker answers what MMS already sent it, then exits."""
        for slot in list(self.slots.values()):
            if slot.listener is not None:
                self.sel.unregister(slot.listener)
                slot.listener.close()
                slot.listener = None
        for pid in list(self.workers):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + drain_s
        if self.hosts is not None:
            self.hosts.shutdown(deadline)
        while self.workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        for slot in list(self.slots.values()):
            self._end(slot, status=signal.SIGTERM, sig=signal.SIGKILL)
        end_descendants()  # orphans of workers that were killed outright
        self._reap()
        try:
            os.unlink(self.sock_path)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--handler", default=HANDLER.default, help="MMS service handler (serve checked it)")
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, format="%(asctime)s [zygote] %(message)s", level=logging.INFO)
    die_with_parent(signal.SIGTERM)
    become_subreaper()
    # Each model holds its socket, its launcher's connection and a copy of MMS's connection here.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    t0 = time.perf_counter()
    preload(args.handler)
    zygote = Zygote(args.socket)
    gc.collect()
    gc.freeze()  # everything imported so far stays shared with the children
    zygote.start()
    log.info("ready in %.2fs, listening on %s", time.perf_counter() - t0, args.socket)
    zygote.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
