"""A shared host process: serves the MMS connections of many models in one selector loop.

Forked from the pre-warmed zygote (container/hosts.py), a host gets each model's MMS connection over its
control socket (SCM_RIGHTS) and answers it exactly as a model's own worker would (backend.py's Backend for
the load, MMS's Service and our handler entry for each request), one message at a time. Its models live in
one ModelCache bounded by the memory budget (host_memory.py); an evicted model reloads from its directory on
its next request.

Before each step on a connection the host writes what it is doing into a page it shares with the zygote
(HostState): when the host dies, the zygote knows whether a request was in its hands (answer it with an
error), or whether a frame was half read or half written (that connection cannot be resumed: close it, MMS
restarts the model's worker), and hands every other connection to a fresh host.

Control messages, zygote -> host: `A` + JSON {id, name, path, handler, tmp_dir, decode} with the connection's
fd; `D<id>` (the model was deleted). Host -> zygote: `L<id> <io name>` (loaded: the name MMS gave the model's
stdout/stderr files), `X<id>` (the connection ended here), `M<id> <ms>` (the model predicts slowly: the host
serves its connection no more, between two requests, and the zygote gives it a process of its own), `d<id>`
(the deleted model is out of this host's cache and memory-ledger record).
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from mms.protocol.otf_message_handler import create_load_model_response, create_predict_response

from sklearn_mme.container import stage_clock
from sklearn_mme.container.backend import DRAIN_IDLE_S, Backend
from sklearn_mme.container.host_memory import HostMemory
from sklearn_mme.container.mms_frames import FrameReader
from sklearn_mme.container.mms_predict import predict
from sklearn_mme.container.procutil import OwnChildren, children, end_tree
from sklearn_mme.container.settings import Wiring
from sklearn_mme.handler.service import ModelService

log = logging.getLogger("mme.host")
IDLE, READING, BUSY, WRITING = 0, 1, 2, 3
SLOW_WINDOW = 5  # predicts a move is judged on: their median, so one cold or unlucky request moves nothing


class HeldClock:
    """How long a predict held the host: wall time less the time its thread waited for a CPU (the second
    field of /proc/thread-self/schedstat). On a machine short of CPU every predict's wall time grows; moving
    models out then would only add processes. Read with pread on a descriptor opened once (~2 us)."""

    def __init__(self) -> None:
        try:  # bound to the thread that opens it: the loop's
            self.fd: int | None = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            self.fd = None  # no scheduler statistics in this kernel: wall time alone

    def _waited_ns(self) -> int:
        if self.fd is None:
            return 0
        try:
            return int(os.pread(self.fd, 128, 0).split()[1])
        except (OSError, ValueError, IndexError):
            return 0

    def start(self) -> tuple[int, int]:
        return time.perf_counter_ns(), self._waited_ns()

    def held_ns(self, start: tuple[int, int]) -> int:
        wall, waited = start
        return max(0, time.perf_counter_ns() - wall - (self._waited_ns() - waited))


class HostState:
    """One shared page: (step, connection id) of the loop, and the connections whose load runs in a thread.
    Written by the host, read by the zygote after the host died."""

    _FMT = struct.Struct("!BI")
    _COUNT = struct.Struct("!H")
    _LOADING_AT = 8
    MAX_LOADING = (mmap.PAGESIZE - _LOADING_AT - _COUNT.size) // 4

    def __init__(self) -> None:
        self._map = mmap.mmap(-1, mmap.PAGESIZE)  # MAP_SHARED | MAP_ANONYMOUS: shared across the fork

    def set(self, step: int, conn_id: int = 0) -> None:
        self._FMT.pack_into(self._map, 0, step, conn_id)

    def get(self) -> tuple[int, int]:
        step, conn_id = self._FMT.unpack_from(self._map, 0)
        return step, conn_id

    def set_loading(self, ids: set[int]) -> None:
        at = self._LOADING_AT + self._COUNT.size
        struct.pack_into(f"!{len(ids)}I", self._map, at, *sorted(ids))
        self._COUNT.pack_into(self._map, self._LOADING_AT, len(ids))

    def loading(self) -> list[int]:
        (count,) = self._COUNT.unpack_from(self._map, self._LOADING_AT)
        return list(struct.unpack_from(f"!{count}I", self._map, self._LOADING_AT + self._COUNT.size))

    def close(self) -> None:
        self._map.close()


@dataclass
class Conn:
    id: int
    sock: socket.socket
    name: str
    path: str
    backend: Backend
    loaded: bool = False
    started: set[int] = field(default_factory=set)  # processes its code started (ended with it)
    predict_ns: deque[int] = field(default_factory=lambda: deque(maxlen=SLOW_WINDOW))
    reader: FrameReader = field(init=False)

    def __post_init__(self) -> None:
        self.reader = FrameReader(self.sock)  # one recv per message, as a worker reads (mms_frames.py)


class HostLoop:
    def __init__(self, ctl: socket.socket, state: HostState) -> None:
        self.ctl = ctl
        self.state = state
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, Conn] = {}
        wiring = Wiring.from_env()
        self.memory = HostMemory(wiring)
        self.stopping = False
        self.orphaned = False
        self.own_children = OwnChildren()
        # Loads run in threads, so a slow model_fn does not hold up the other models here; a finished load
        # wakes the loop, which listens to its connection again (selectors are not thread-safe).
        self.lock = threading.Lock()
        self.loading: set[int] = set()
        self.finished: list[Conn] = []
        self.wake_r, self.wake_w = socket.socketpair()
        self.clock = stage_clock.from_path(wiring.stage_log)  # the bench's breakdown
        self.slow_ns = (wiring.host_slow_ms or 0) * 1_000_000
        self.held = HeldClock() if self.slow_ns else None

    def run(self) -> int:
        from sklearn_mme.container import mms_entry

        mms_entry.serve_many(self.memory.cache, self.memory.room)
        signal.signal(signal.SIGTERM, self._stop)
        self.sel.register(self.ctl, selectors.EVENT_READ, None)
        self.sel.register(self.wake_r, selectors.EVENT_READ, "wake")
        while True:
            # Draining (SIGTERM): answer what MMS already sent, leave once it has sent nothing for a moment.
            events = self.sel.select(timeout=DRAIN_IDLE_S if self.stopping else 1.0)
            if self.stopping and not events:
                return 0
            for key, _ in events:
                if key.data is None:
                    if not self._from_zygote():
                        # The zygote went: serve the models here on (no new ones come); MMS closing
                        # their connections (DELETE) ends them, and the host with the last one.
                        self.sel.unregister(self.ctl)
                        self.orphaned = True
                elif key.data == "wake":
                    self._loads_done()
                elif key.data.id in self.conns:  # not dropped earlier in this batch
                    self._serve(key.data)
                    # A further message already read with this one: the selector would not see it.
                    while key.data.id in self.conns and key.data.id not in self.loading \
                            and key.data.reader.pending():
                        self._serve(key.data)
            if self.orphaned and not self.conns and not self.loading:
                return 0

    def _stop(self, *_: object) -> None:
        self.stopping = True

    # -- the zygote's messages ------------------------------------------------------------------------
    def _from_zygote(self) -> bool:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(self.ctl, 65536, 1)
        except OSError:
            return False
        if not msg:
            return False  # the zygote went
        if msg[:1] == b"A" and len(fds) == 1:
            self._adopt(json.loads(msg[1:]), socket.socket(fileno=fds[0]))
        elif msg[:1] == b"P" and not fds:
            self._prefetch(os.fsdecode(msg[1:]))
        elif msg[:1] == b"U" and not fds:
            path = os.fsdecode(msg[1:])
            if not any(c.path == path for c in self.conns.values()):
                self.memory.drop(path, path, last=True)
        elif msg[:1] == b"D":
            for fd in fds:
                os.close(fd)
            conn = self.conns.get(int(msg[1:]))
            if conn is not None:
                self._drop(conn, None)
            try:  # its ledger line is gone: the zygote lets the DELETE be answered
                self.ctl.send(b"d" + msg[1:])
            except OSError:
                pass
        else:
            for fd in fds:
                os.close(fd)
        return True

    def _prefetch(self, path: str) -> None:
        """Load a model that was just registered into the cache, in a thread, before MMS's load asks for it
        (hosts.py prefetch). MMS's load then finds it there, or waits for this load (the cache loads a key
        once); a failure here is not cached, and MMS's load tries again and answers with its reason."""
        def load() -> None:
            try:
                self.memory.cache.get_or_load(path, lambda: ModelService.load(path))
            except Exception:  # MMS's own load reports it
                pass

        threading.Thread(target=load, name="prefetch", daemon=True).start()

    def _adopt(self, info: dict, sock: socket.socket) -> None:
        if info.get("decode") is not None:  # whether MMS's decoder turns JSON and text bodies into objects
            os.environ["MMS_DECODE_INPUT_REQUEST"] = info["decode"]
        request = {"handler": info["handler"].encode(), "modelPath": info["path"].encode(),
                   "modelName": info["name"].encode()}
        # tcp with no bind: MMS's constructor would otherwise delete the model's socket file.
        backend = Backend("tcp", None, "127.0.0.1", "0", request, False, info["tmp_dir"])
        backend.sock.close()  # its listening socket: unused here
        sock.setblocking(True)
        conn = Conn(int(info["id"]), sock, info["name"], info["path"], backend)
        self.conns[conn.id] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn: Conn, tell: bytes | None) -> None:
        """Forget a connection, telling the zygote `tell`; its model leaves the cache unless another
        connection here serves it."""
        self.conns.pop(conn.id, None)
        try:
            self.sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()
        for pid in conn.started:
            end_tree(pid)
        self.memory.drop(conn.path, conn.name, last=not any(o.path == conn.path for o in self.conns.values()))
        if tell:
            self._say(tell)

    def _say(self, msg: bytes) -> None:
        try:
            self.ctl.send(msg)
        except OSError:
            pass

    # -- MMS's messages -------------------------------------------------------------------------------
    def _serve(self, conn: Conn) -> None:
        try:
            # Consumes nothing: a death here loses no frame.
            if not conn.reader.pending() and not conn.sock.recv(1, socket.MSG_PEEK):
                raise ConnectionError("MMS closed the connection")
            self.state.set(READING, conn.id)
            if self.clock is not None:
                self.clock.mark(stage_clock.READABLE)
            cmd, msg = conn.reader.read()
            if self.clock is not None:
                self.clock.mark(stage_clock.DECODED)
        except (OSError, ValueError) as exc:
            self.state.set(IDLE)
            log.info("connection of %s ended: %s", conn.name, exc)
            self._drop(conn, b"X%d" % conn.id)
            return
        if cmd == b"L" and len(self.loading) < HostState.MAX_LOADING:
            stage_clock.load_mark(conn.name, "h_frame")
            self._load_in_thread(conn, msg)
            self.state.set(IDLE)
            return
        self.state.set(BUSY, conn.id)
        if cmd == b"L":
            answer = self._load(conn, msg)
        elif self.held is None:
            answer = self._predict(conn, msg)
        else:
            started = self.held.start()
            answer = self._predict(conn, msg)
            conn.predict_ns.append(self.held.held_ns(started))
        self.state.set(WRITING, conn.id)
        try:
            conn.sock.sendall(answer)
            if self.clock is not None and cmd == b"I":
                self.clock.mark(stage_clock.SENT)
                self.clock.flush()
        except OSError:
            # MMS is gone from this connection: end it for every holder (the zygote keeps a copy).
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._drop(conn, b"X%d" % conn.id)
        self.state.set(IDLE)
        if cmd == b"I" and self.held is not None and conn.id in self.conns:
            self._move_if_slow(conn)
        # A failed load keeps its connection: our MMS plugin unregisters the model, MMS kills its launcher,
        # and the zygote's `D` ends it. Closing it here at once raced MMS reading the answer ("The model's
        # worker stopped while loading", 500, instead of the load's own status).

    def _move_if_slow(self, conn: Conn) -> None:
        """A model whose median predict (the time it held the host, not waiting for a CPU) is past
        MME_HOST_SLOW_MS holds up every other model here: hand its connection back to the zygote for a
        process of its own. Only between two requests (its answer is written and nothing of a next one is
        read), so MMS's next request waits in the socket for the new process, which reloads the model from
        its directory first."""
        times = conn.predict_ns
        if len(times) < SLOW_WINDOW or self.orphaned or self.stopping or conn.reader.pending():
            return
        median = sorted(times)[SLOW_WINDOW // 2]
        if median > self.slow_ns:
            log.info("model %s: median predict %.1f ms over its last %d requests: moving it out", conn.name,
                     median / 1e6, SLOW_WINDOW)
            self._drop(conn, b"M%d %d" % (conn.id, median // 1_000_000))

    def _load_in_thread(self, conn: Conn, msg: dict) -> None:
        self.sel.unregister(conn.sock)  # MMS sends nothing more on it before the load's answer
        with self.lock:
            self.loading.add(conn.id)
            self.state.set_loading(self.loading)

        def load() -> None:
            try:
                answer = self._load(conn, msg)
                stage_clock.load_mark(conn.name, "h_sent")  # before: MMS may stamp its read first
                conn.sock.sendall(answer)
            except Exception:  # dropped meanwhile (DELETE), or a bug: the loop must hear of it either way
                log.exception("load of %s ended badly", conn.name)
            finally:
                with self.lock:
                    self.loading.discard(conn.id)
                    self.state.set_loading(self.loading)
                    self.finished.append(conn)
                try:
                    self.wake_w.send(b"!")
                except OSError:
                    pass

        threading.Thread(target=load, name=f"load-{conn.id}", daemon=True).start()

    def _loads_done(self) -> None:
        try:
            self.wake_r.recv(4096)
        except OSError:
            pass
        with self.lock:
            finished, self.finished = self.finished, []
        for conn in finished:
            if conn.id in self.conns:  # not dropped while it loaded
                self.sel.register(conn.sock, selectors.EVENT_READ, conn)

    def _load(self, conn: Conn, msg: dict) -> bytes:
        # MMS's stdout/stderr files: not made here. The front opens them itself ("rw" makes plain files,
        # whose readers end at once); the zygote removes them when the model goes.
        io_name = msg.pop("ioFileDescriptor", b"").decode("utf-8", "replace")
        before = set(children(os.getpid()))
        stage_clock.load_mark(conn.name, "h_load_in")
        result, code = conn.backend.load_model(msg)
        stage_clock.load_mark(conn.name, "h_load_out")
        conn.started |= set(children(os.getpid())) - before
        conn.loaded = code == 200
        if conn.loaded:
            self._say(b"L%d %s" % (conn.id, io_name.encode()))
        else:
            log.warning("model %s failed to load (%d): %s", conn.name, code, result)
        return create_load_model_response(code, result)

    def _predict(self, conn: Conn, msg: list) -> bytes:
        if not conn.loaded:
            # Handed over from a host that died: MMS's load message went with it. Load as it asked.
            result, code = conn.backend.load_model(dict(conn.backend.model_meta_data))
            if code != 200:
                ids = {i: r.get("requestId", b"").decode("utf-8", "replace") for i, r in enumerate(msg)}
                return create_predict_response(None, ids, str(result), code)
            conn.loaded = True
        before = self.own_children.snapshot()
        try:
            return predict(conn.backend.service, msg, self.clock)
        finally:
            # What the model's code started (a child, or a daemon re-parented here): ended with the model.
            conn.started |= OwnChildren.new(before, self.own_children.snapshot())


def run(ctl: socket.socket, state: HostState) -> int:
    """The host's life after the fork; returns its exit code."""
    # MMS's worker code logs two lines per model it is given; ours (mme.*) says what matters.
    logging.basicConfig(stream=sys.stdout, format="%(asctime)s [host] %(message)s", level=logging.WARNING,
                        force=True)
    logging.getLogger("mme").setLevel(logging.INFO)
    return HostLoop(ctl, state).run()
