"""Pre-warmed fork server: the one backend server behind every model MMS loads.

Vanilla MMS starts a fresh interpreter per model ("backend server"), which re-imports numpy, scipy
and scikit-learn (~92 MB and ~1.1 s per model) and then forks one worker per connection. Here the
zygote imports all that once, warms it with a real load and predict, freezes the GC (so collections
in children don't write to, and un-share, the inherited pages), and then plays the backend server
for every model: it binds each model's socket, tells MMS "MMS worker started.", and forks a worker
straight from itself for each connection MMS opens. A model costs only the pages its worker touches.

Protocol with launcher.py (MMS's per-model 'python') over a Unix socket: the launcher sends a
length-prefixed JSON {argv, cwd, env, adopt} with its stdin/stdout/stderr attached (SCM_RIGHTS),
then may send `S<signum>\\n` to forward a signal; the zygote answers `X<waitstatus>\\n` when the model
ends. When the launcher disappears (MMS kills it on DELETE) the model's socket and workers go.
If the zygote itself dies, workers keep serving; `serve` starts a new zygote and each launcher
reconnects with adopt=true so the model's socket is served again.

The zygote also keeps its own copy of every worker's MMS connection: when the kernel's OOM killer takes
a worker in the middle of a request, the zygote answers that request 507 and forks a replacement that
reloads the model on the same connection (see Worker and container/worker_state.py).
"""

from __future__ import annotations

import argparse
import array
import gc
import importlib
import json
import logging
import os
import resource
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from mms.protocol.otf_message_handler import create_predict_response
from sklearn_mme.container.oom import oom_kill_count
from sklearn_mme.container.procutil import become_subreaper, die_with_parent
from sklearn_mme.container.settings import HANDLER, Wiring
from sklearn_mme.container.worker_state import WorkerState

log = logging.getLogger("mme.zygote")
MAX_REQUEST = 1 << 20
OOM_MESSAGE = "Insufficient memory: the model's worker was killed by the out-of-memory killer"


def preload(handler: str) -> None:
    """Import and warm everything a worker and a typical model need, before any fork."""
    # One BLAS thread per process: many small models on few cores; also makes forking safe.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import multiprocessing  # noqa: F401

    import mms.model_loader
    import mms.service  # noqa: F401
    import scipy.sparse  # noqa: F401
    import sklearn.cluster
    import sklearn.compose
    import sklearn.decomposition
    import sklearn.ensemble
    import sklearn.impute
    import sklearn.linear_model
    import sklearn.naive_bayes
    import sklearn.neighbors
    import sklearn.pipeline
    import sklearn.preprocessing
    import sklearn.svm
    import sklearn.tree  # noqa: F401
    import sklearn_mme.container.backend  # noqa: F401

    # The configured MMS handler module (ours by default); a path-style handler is imported per model.
    module = handler.split(":", 1)[0]
    if "/" not in module:
        importlib.import_module(module)
    _warm_up()


def _warm_up() -> None:
    """Run one real load and one predict per codec, so lazy imports and caches are filled pre-fork."""
    from sklearn_mme.container import examples
    from sklearn_mme.handler.service import ModelService

    with tempfile.TemporaryDirectory(prefix="mme-warm-") as tmp:
        model_dir = examples.write_model_dir(examples.small_model(0), tmp, "warm")
        service = ModelService.load(model_dir)
        for ctype, body in (("text/csv", b"5.1,3.5,1.4,0.2"), ("application/json", b"[[5.1,3.5,1.4,0.2]]"),
                            ("application/jsonlines", b"[5.1,3.5,1.4,0.2]")):
            for accept in ("application/json", "text/csv", "application/jsonlines", "application/x-npy"):
                service.invoke(body, ctype, accept)


def follow(pid: int) -> None:
    """End this process when process `pid` (the model's launcher, MMS's handle on it) exits."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # already gone
        os._exit(0)

    def watch() -> None:
        import select

        poller = select.poll()  # not select(): descriptors here can be numbered past FD_SETSIZE
        poller.register(fd, select.POLLIN)
        while not poller.poll():
            pass
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


@dataclass
class Slot:
    """One model MMS asked for: its launcher, its socket, its stdio and its live workers."""

    conn: socket.socket
    launcher_pid: int
    request: dict
    fds: list[int]
    args: argparse.Namespace
    listener: socket.socket | None = None
    workers: set[int] = field(default_factory=set)


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
        self.stopping = False

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

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> None:
        while not self.stopping:
            for key, _ in self.sel.select(timeout=1.0):
                kind, slot = key.data
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
            self._reap()
        self.shutdown()

    # -- launchers ---------------------------------------------------------------------------
    def _accept_launcher(self) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        try:
            pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                      struct.calcsize("3i")))[0]
            request, fds = self._read_request(conn)
        except (OSError, ValueError) as exc:
            log.warning("bad launcher request: %s", exc)
            conn.close()
            return
        from mms.arg_parser import ArgParser

        argv = [a for a in request.get("argv") or [] if not a.endswith("model_service_worker.py")]
        try:
            args = ArgParser.model_service_worker_args().parse_args(argv)
        except SystemExit:
            log.warning("launcher sent arguments MMS's worker would not take: %s", argv)
            self._close_fds(fds)
            conn.close()
            return
        conn.settimeout(None)
        slot = Slot(conn=conn, launcher_pid=pid, request=request, fds=fds, args=args)
        try:
            slot.listener = self._bind(args.sock_name)
        except OSError as exc:
            self._write(slot, f"cannot listen on {args.sock_name}: {exc}\n", err=True)
            self._end(slot, status=1 << 8)
            return
        self.slots[conn.fileno()] = slot
        self.sel.register(conn, selectors.EVENT_READ, ("launcher", slot))
        self.sel.register(slot.listener, selectors.EVENT_READ, ("model", slot))
        if not request.get("adopt"):
            # What MMS waits for on the backend server's stdout before it connects.
            self._write(slot, f"Listening on port: {args.sock_name}\n[PID] {pid}\nMMS worker started.\n"
                              f"Python runtime: {sys.version.split()[0]}\n")

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
    def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
        fds = array.array("i")
        msg, ancdata, _flags, _addr = conn.recvmsg(4, socket.CMSG_LEN(3 * fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
        try:
            while len(msg) < 4:
                more = conn.recv(4 - len(msg))
                if not more:
                    raise ValueError("launcher closed early")
                msg += more
            (length,) = struct.unpack("!I", msg)
            if length > MAX_REQUEST:
                raise ValueError(f"request of {length} bytes")
            body = b""
            while len(body) < length:
                more = conn.recv(length - len(body))
                if not more:
                    raise ValueError("launcher closed early")
                body += more
            if len(fds) != 3:
                raise ValueError(f"expected 3 stdio descriptors, got {len(fds)}")
            return json.loads(body), list(fds)
        except BaseException:
            Zygote._close_fds(list(fds))
            raise

    @staticmethod
    def _close_fds(fds: list[int]) -> None:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def _from_launcher(self, slot: Slot) -> None:
        try:
            data = slot.conn.recv(256)
        except OSError:
            data = b""
        if not data:  # launcher gone (MMS kills it on DELETE or after a failure): the model goes
            self._end(slot, status=None)
            return
        for line in data.split(b"\n"):
            if line.startswith(b"S") and line[1:].isdigit():
                sig = int(line[1:])
                self._end(slot, status=sig, sig=sig)  # the model dies of the signal it was sent
                return

    def _end(self, slot: Slot, status: int | None, sig: int = signal.SIGKILL) -> None:
        """Take a model down: its workers, its socket, its stdio; report `status` to the launcher."""
        for pid in list(slot.workers):
            try:
                os.kill(pid, sig)
                if sig != signal.SIGKILL:
                    os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
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
        if status is not None:
            try:
                slot.conn.sendall(b"X%d\n" % status)
            except OSError:
                pass
        self.slots.pop(slot.conn.fileno(), None)
        try:
            self.sel.unregister(slot.conn)
        except (KeyError, ValueError):
            pass
        slot.conn.close()
        self._close_fds(slot.fds)
        slot.fds = []

    # -- workers -----------------------------------------------------------------------------
    def _fork_worker(self, slot: Slot, client: socket.socket | None = None,
                     reload: dict | None = None) -> None:
        """A worker for a new MMS connection, or (`reload`) a replacement on a killed worker's one."""
        if client is None:
            assert slot.listener is not None
            try:
                client, _ = slot.listener.accept()
            except OSError:
                return
        state = WorkerState()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_worker(slot, client, state, reload)  # never returns
        slot.workers.add(pid)
        self.workers[pid] = Worker(slot, client, state)

    def _become_worker(self, slot: Slot, client: socket.socket, state: WorkerState,
                       reload: dict | None) -> None:
        code = 1
        try:
            follow(slot.launcher_pid)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # Other workers' connections must not stay open here, or MMS would not see them close.
            for worker in self.workers.values():
                worker.conn.close()
                worker.state.close()
            # Close every zygote socket through its object, so no stale object closes a reused fd later.
            for other in list(self.slots.values()):
                other.conn.close()
                if other.listener is not None:
                    other.listener.close()
                if other is not slot:
                    self._close_fds(other.fds)
            for sock in (self.listener, self.wake_r, self.wake_w):
                if sock is not None:
                    sock.close()
            self.sel.close()
            for target, fd in enumerate(slot.fds):
                os.dup2(fd, target)
            self._close_fds([fd for fd in slot.fds if fd > 2])
            request = slot.request
            os.chdir(request.get("cwd") or "/")
            os.environ.clear()
            os.environ.update(request.get("env") or {})
            # What a fresh interpreter would have taken from PYTHONPATH (MMS puts the model dir there).
            extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
            sys.path[1:1] = extra
            limit_worker_memory(Wiring.from_env().worker_memory_limit_bytes)  # checked by serve
            from sklearn_mme.container.backend import serve_connection

            code = serve_connection(client, slot.args, state, reload)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker failed")
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            worker = self.workers.pop(pid, None)
            if worker is not None:
                worker.slot.workers.discard(pid)
                self._worker_ended(pid, worker, status)

    def _worker_ended(self, pid: int, worker: Worker, status: int) -> None:
        """OOM-killed mid-request: answer 507 and carry on with a replacement. Otherwise close our copy
        of the connection, so MMS sees the worker gone, reconnects, and we fork a fresh worker then."""
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
                worker.conn.sendall(create_predict_response(None, {}, OOM_MESSAGE, 507))
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
        while self.workers and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        for slot in list(self.slots.values()):
            self._end(slot, status=signal.SIGTERM, sig=signal.SIGKILL)
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
    # Each model holds a socket, a launcher connection and three stdio descriptors here.
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
