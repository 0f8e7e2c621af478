"""Pre-warmed fork server: one process imports the heavy libraries once; each model is a fork of it.

Vanilla MMS starts a fresh interpreter per model, which re-imports numpy, scipy and scikit-learn:
~92 MB and ~1.1 s per model. Here the zygote imports them once, warms them with a tiny predict,
freezes the GC (so collections in the children don't write to, and un-share, the inherited pages)
and forks a backend for each launcher that connects. A model then costs only the pages it touches.

Protocol with launcher.py over a Unix socket: the launcher sends a length-prefixed JSON
{argv, cwd, env} with its stdin/stdout/stderr attached (SCM_RIGHTS), then may send `S<signum>\n`
lines to forward signals; the zygote answers `P<pid>\n` once forked and `X<waitstatus>\n` when
the backend exits. Each backend leads its own process group (its worker children join it), so
the whole model goes at once when the launcher disappears.
"""

from __future__ import annotations

import argparse
import array
import gc
import importlib
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time

from container.procutil import become_subreaper, die_with_parent, kill_group

log = logging.getLogger("mme.zygote")
MAX_REQUEST = 1 << 20


def preload() -> None:
    """Import and warm everything a backend and a typical model need, before any fork."""
    # One BLAS thread per process: many small models on few cores; also makes forking safe.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import multiprocessing  # noqa: F401

    import joblib  # noqa: F401
    import mms.model_loader  # noqa: F401
    import mms.service  # noqa: F401
    import numpy as np
    import scipy.sparse  # noqa: F401
    import scipy.special  # noqa: F401
    import sklearn  # noqa: F401
    import sklearn.cluster  # noqa: F401
    import sklearn.compose  # noqa: F401
    import sklearn.decomposition  # noqa: F401
    import sklearn.ensemble  # noqa: F401
    import sklearn.impute  # noqa: F401
    import sklearn.linear_model
    import sklearn.naive_bayes  # noqa: F401
    import sklearn.neighbors  # noqa: F401
    import sklearn.pipeline  # noqa: F401
    import sklearn.preprocessing  # noqa: F401
    import sklearn.svm  # noqa: F401
    import sklearn.tree  # noqa: F401

    import container.backend  # noqa: F401

    # The configured MMS handler module (ours by default); a path-style handler is imported per model.
    module = os.environ.get("MME_HANDLER", "container.mms_entry:handle").split(":", 1)[0]
    if "/" not in module:
        importlib.import_module(module)

    # Touch the lazy paths (input validation, threadpool checks) once, so children inherit them warm.
    X = np.arange(8.0).reshape(4, 2)
    clf = sklearn.linear_model.LogisticRegression().fit(X, [0, 1, 0, 1])
    clf.predict_proba(X)


def follow_launcher(pid: int) -> None:
    """Kill this process group when the launcher (MMS's handle on this model) exits."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:  # already gone
        kill_group(os.getpgid(0), signal.SIGKILL)
        return

    def watch() -> None:
        import select

        select.select([fd], [], [])
        kill_group(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, name="follow-launcher", daemon=True).start()


class Zygote:
    def __init__(self, sock_path: str) -> None:
        self.sock_path = sock_path
        self.sel = selectors.DefaultSelector()
        self.children: dict[int, socket.socket] = {}  # backend pid -> its launcher's connection
        self.listener: socket.socket | None = None
        self.wake_r, self.wake_w = socket.socketpair()
        self.stopping = False

    def start(self) -> None:
        if os.path.exists(self.sock_path):
            os.unlink(self.sock_path)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(self.sock_path + ".tmp")
        self.listener.listen(256)
        os.rename(self.sock_path + ".tmp", self.sock_path)  # appears only when ready to fork
        self.sel.register(self.listener, selectors.EVENT_READ, "accept")
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_term)
        signal.signal(signal.SIGINT, self._on_term)

    def _on_term(self, *_: object) -> None:
        self.stopping = True

    def run(self) -> None:
        while not self.stopping:
            for key, _ in self.sel.select(timeout=1.0):
                if key.data == "accept":
                    self._accept()
                elif key.data == "wake":
                    try:
                        while self.wake_r.recv(512):
                            pass
                    except BlockingIOError:
                        pass
                else:
                    self._from_launcher(key.data, key.fileobj)
            self._reap()
        self.shutdown()

    def _accept(self) -> None:
        assert self.listener is not None
        conn, _ = self.listener.accept()
        conn.settimeout(10)
        launcher_pid = struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                          struct.calcsize("3i")))[0]
        try:
            request, fds = self._read_request(conn)
        except (OSError, ValueError) as exc:
            log.warning("zygote: bad launcher request: %s", exc)
            conn.close()
            return
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_backend(conn, request, fds, launcher_pid)  # never returns
        for fd in fds:
            os.close(fd)
        conn.settimeout(None)
        self.children[pid] = conn
        self.sel.register(conn, selectors.EVENT_READ, pid)
        try:
            conn.sendall(b"P%d\n" % pid)
        except OSError:
            pass

    @staticmethod
    def _read_request(conn: socket.socket) -> tuple[dict, list[int]]:
        fds = array.array("i")
        msg, ancdata, _flags, _addr = conn.recvmsg(4, socket.CMSG_LEN(3 * fds.itemsize))
        for level, kind, data in ancdata:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
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
            for fd in fds:
                os.close(fd)
            raise ValueError(f"expected 3 stdio descriptors, got {len(fds)}")
        return json.loads(body), list(fds)

    def _become_backend(self, conn: socket.socket, request: dict, fds: list[int], launcher_pid: int) -> None:
        code = 1
        try:
            os.setsid()
            # Not tied to the zygote's life (a zygote crash must not take loaded models down);
            # tied to the launcher's instead, which is what MMS kills to unload the model.
            follow_launcher(launcher_pid)
            signal.set_wakeup_fd(-1)
            for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            # Drop every zygote socket through its object, so no stale object closes a reused fd later.
            for other in list(self.children.values()) + [conn, self.listener, self.wake_r, self.wake_w]:
                if other is not None:
                    other.close()
            self.sel.close()
            for target, fd in enumerate(fds):
                os.dup2(fd, target)
                if fd > 2:
                    os.close(fd)
            os.chdir(request.get("cwd") or "/")
            os.environ.clear()
            os.environ.update(request.get("env") or {})
            argv = list(request.get("argv") or [])
            if argv and argv[0].endswith(".py"):
                argv = argv[1:]  # MMS's model_service_worker.py path: replaced by our backend
            sys.argv = ["container.backend", *argv]
            # What a fresh interpreter would have taken from PYTHONPATH (MMS puts the model dir there).
            extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and p not in sys.path]
            sys.path[1:1] = extra
            from container.backend import main

            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:  # noqa: BLE001 - report, then leave the fork no matter what
            log.exception("zygote child failed")
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _from_launcher(self, pid: int, conn: socket.socket) -> None:
        try:
            data = conn.recv(256)
        except OSError:
            data = b""
        if not data:  # launcher gone (MMS kills it on DELETE or after a failure): take the model down
            kill_group(pid, signal.SIGKILL)
            self.sel.unregister(conn)
            conn.close()
            self.children[pid] = None  # type: ignore[assignment]  # reaped in _reap
            return
        for line in data.split(b"\n"):
            if line.startswith(b"S") and line[1:].isdigit():
                kill_group(pid, int(line[1:]))

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid not in self.children:
                continue  # an orphaned worker re-parented to us (subreaper): just reaped
            conn = self.children.pop(pid)
            kill_group(pid, signal.SIGKILL)  # the backend's workers go with it
            if conn is not None:
                try:
                    conn.sendall(b"X%d\n" % status)
                except OSError:
                    pass
                self.sel.unregister(conn)
                conn.close()

    def shutdown(self) -> None:
        for pid in list(self.children):
            kill_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.children and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.05)
        for pid in list(self.children):
            kill_group(pid, signal.SIGKILL)
        self._reap()
        try:
            os.unlink(self.sock_path)
        except OSError:
            pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--socket", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, format="%(asctime)s [zygote] %(message)s", level=logging.INFO)
    die_with_parent(signal.SIGTERM)
    become_subreaper()
    t0 = time.perf_counter()
    preload()
    zygote = Zygote(args.socket)
    gc.collect()
    gc.freeze()  # everything imported so far stays shared with the children
    zygote.start()
    log.info("ready in %.2fs, listening on %s", time.perf_counter() - t0, args.socket)
    zygote.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
