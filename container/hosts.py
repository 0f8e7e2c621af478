"""The zygote's side of MME_BACKEND=hosts: a few shared host processes serve the long tail of small models.

A model's own forked worker costs ~9 MB of touched pages; MMS's own floor is ~1.1 MB per model. So with
`hosts`, the zygote forks MME_HOSTS host processes (default: one per usable core) once it is warm, and when
MMS connects to a small model's socket it hands the connection to the host with the fewest connections
(SCM_RIGHTS) instead of forking a worker; host_loop.py serves it. The zygote keeps its own copy of every
handed connection, as it does for its workers: when a host dies (SIGKILL, segfault, os._exit, OOM kill), MMS
sees no disconnect. The request the host had in its hands is answered with an error (507 after an OOM kill,
else 500) and that model moves to a process of its own (the zygote's per-model worker, reloading the model
on the same connection), so a model that crashes its host cannot do it twice; a connection with a frame half
read or half written is closed (MMS restarts that model's worker); every other connection goes to a fresh
host and its model reloads lazily from its directory on its next request.

Who gets a process of its own instead (today's per-model path, container/model_forks.py): every model when
SAGEMAKER_MODEL_SERVER_WORKERS > 1 (its workers then share one copy), a model whose files on disk exceed
MME_HOST_MAX_ARTIFACT (a big model is slow to predict and would hold up its host's other models), a second
connection to a hosted model (MMS scaled it up: that worker loads its own copy), a model whose median
predict is past MME_HOST_SLOW_MS (its host hands the connection back between two requests, host_loop.py),
and a model whose request was in flight when its host died or that got its host stuck past a DELETE or its
response timeout.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sklearn_mme.container import host_loop, mms_protocol, stage_clock, worker_output
from sklearn_mme.container.host_events import HostEvents
from sklearn_mme.container.host_loop import BUSY, READING, WRITING, HostState
from sklearn_mme.container.oom import oom_kill_count
from sklearn_mme.container.procutil import become_subreaper
from sklearn_mme.container.settings import WORKERS, Wiring
from sklearn_mme.container.worker_process import leave_fork, limit_worker_memory, reset_signals

if TYPE_CHECKING:
    from sklearn_mme.container.zygote import Slot, Zygote

log = logging.getLogger("mme.hosts")
DIED_MESSAGE = "The process serving the model died while answering this request"
OOM_MESSAGE = "Insufficient memory: the model's host process was killed by the out-of-memory killer"
MAX_ARTIFACT_FILES = 10_000  # a directory with more files than this is big whatever their sizes
# A deleted model's request still in its host this long after the DELETE reached the zygote holds the host:
# it is killed. Not at once: MMS may give up on a request (or a DELETE race one) the host is about to end.
STUCK_AFTER_S = 2.0
# A host that served this many connections and now has none is replaced by a fresh fork: Python's heap keeps
# what hundreds of models fragmented (measured: +11 MB per host after 500 models came and went).
RECYCLE_AFTER = 50
DECODE_VAR = "MMS_DECODE_INPUT_REQUEST"  # MMS sets it per backend; its frame decoder reads it per request


@dataclass(eq=False)
class Hosted:
    """A model's MMS connection served by a host; `client` is the zygote's own copy."""

    id: int
    slot: Slot
    client: socket.socket
    host: Host
    loaded: bool = False
    io_name: str = ""


@dataclass(eq=False)
class Host:
    pid: int
    ctl: socket.socket
    state: HostState
    oom_kills: int
    conns: dict[int, Hosted] = field(default_factory=dict)
    served: int = 0  # connections it was given
    retiring: bool = False  # emptied after many models: takes no new ones, a fresh host replaces it
    ended: bool = False  # the zygote's loop skips events of ended things


class Hosts:
    def __init__(self, zygote: Zygote, count: int, max_artifact_bytes: int, workers_per_model: int) -> None:
        self.zygote = zygote
        self.count = count
        self.max_artifact_bytes = max_artifact_bytes
        self.workers_per_model = workers_per_model
        self.hosts: dict[int, Host] = {}
        self.conns: dict[int, Hosted] = {}
        # Connection id -> (host pid, slot) of a deleted model whose host has yet to say it dropped it (`d`).
        self.acks: dict[int, tuple[int, Slot]] = {}
        # Names of models that crashed or got stuck in a host: they get a process of their own from now on.
        self.own_process: set[str] = set()
        self.stuck: set[int] = set()  # hosts we killed because a deleted model's request held them
        # Connection id -> (host, deadline, model) of a deleted model whose request its host was in.
        self.suspects: dict[int, tuple[Host, float, str]] = {}
        self.stuck_after_s = STUCK_AFTER_S
        self.events = HostEvents(zygote.ledger.dir if zygote.ledger else None)
        self.ids = itertools.count(1)
        self.stopping = False
        # Models a host is loading ahead of MMS's connection (prefetch), by the model's socket path.
        self.prefetched: dict[str, Host] = {}

    @classmethod
    def from_env(cls, zygote: Zygote) -> Hosts | None:
        wiring = Wiring.from_env()
        if not wiring.host_count:
            return None
        return cls(zygote, wiring.host_count, wiring.host_max_artifact_bytes or 0, WORKERS.read(os.environ))

    def start(self) -> None:
        for _ in range(self.count):
            self._spawn()

    # -- hosts -------------------------------------------------------------------------------------
    def _spawn(self) -> Host:
        ctl, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        state = HostState()
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._become_host(child, state)  # never returns
        child.close()
        host = Host(pid, ctl, state, oom_kill_count())
        self.hosts[pid] = host
        self.zygote.sel.register(ctl, 1, ("host", host))  # selectors.EVENT_READ
        return host

    @staticmethod
    def _become_host(ctl: socket.socket, state: HostState) -> None:
        """In the child: keep stdio and the control socket, close every other descriptor the zygote holds."""
        def body() -> int:
            reset_signals()
            # No parent-death signal: a host outlives a zygote death and serves its models on (issue 14
            # item 2); `serve`, a subreaper, adopts and reaps it, and ends it when it stops.
            keep = {0, 1, 2, ctl.fileno()}
            for name in os.listdir("/proc/self/fd"):
                if int(name) not in keep:
                    try:
                        os.close(int(name))
                    except OSError:
                        pass
            stage_clock.forget_inherited()
            # Per host, as per worker: past it an allocation is a MemoryError (507), not an OOM kill.
            limit_worker_memory(Wiring.from_env().worker_memory_limit_bytes)
            # The models' output through a drained pipe, as a worker's: bounded lines, never blocking.
            out, err = os.dup(1), os.dup(2)
            worker_output.start(out, err)
            os.close(out)
            os.close(err)
            # Whatever a model's code starts stays below this host, so it can be ended with the model.
            become_subreaper()
            return host_loop.run(ctl, state)

        leave_fork(body, "host")

    def close_in_child(self) -> None:
        """In a freshly forked worker: none of the hosts' descriptors are its own."""
        for host in self.hosts.values():
            host.ctl.close()
        for hosted in self.conns.values():
            hosted.client.close()

    # -- connections --------------------------------------------------------------------------------
    def take(self, slot: Slot, client: socket.socket) -> bool:
        """Hand MMS's new connection to `slot`'s model to a host; False: it gets a process of its own."""
        stage_clock.load_mark(slot.args.model_name, "z_accepted")
        if self.stopping or not self.hosts or not self._hostable(slot):
            return False
        host = self.prefetched.pop(slot.args.sock_name, None)
        if host is None or not self._open(host):
            if host is not None:
                self._unfetch(host, slot)
            host = self._pick()
            if host is None:
                return False
        hosted = Hosted(next(self.ids), slot, client, host)
        stage_clock.load_mark(slot.args.model_name, "z_handed")  # before: the host may stamp its read first
        if not self._send(hosted, host):
            return False
        self.conns[hosted.id] = hosted
        return True

    def prefetch(self, slot: Slot) -> None:
        """A model just registered: the host its connection will go to loads it now, while MMS reads the
        handshake and connects (~3 ms), so MMS's load finds it in that host's cache. Not a model with code of
        its own: what its model_fn starts belongs to its connection, which does not exist yet."""
        if self.stopping or not self.hosts or not self._hostable(slot) \
                or os.path.isdir(os.path.join(slot.args.model_path, "code")):
            return
        host = self._pick()
        if host is None:
            return
        try:
            host.ctl.send(b"P" + slot.args.model_path.encode())
        except OSError:
            return
        self.prefetched[slot.args.sock_name] = host

    def _unfetch(self, host: Host, slot: Slot) -> None:
        """The prefetched model's connection went elsewhere or never came: its host lets it go (unless a
        connection there serves the same directory)."""
        try:
            host.ctl.send(b"U" + slot.args.model_path.encode())
        except OSError:
            pass

    def _open(self, host: Host) -> bool:
        return not host.retiring and not host.ended and self.hosts.get(host.pid) is host

    def _pick(self) -> Host | None:
        open_hosts = [h for h in self.hosts.values() if not h.retiring]
        return min(open_hosts, key=lambda h: len(h.conns)) if open_hosts else None

    def _hostable(self, slot: Slot) -> bool:
        if self.workers_per_model > 1 or slot.args.model_name in self.own_process:
            return False
        if any(h.slot is slot for h in self.conns.values()):
            return False  # a second worker for a hosted model: MMS scaled it up
        return _artifact_bytes(slot.args.model_path, self.max_artifact_bytes) <= self.max_artifact_bytes

    def _send(self, hosted: Hosted, host: Host) -> bool:
        args = hosted.slot.args
        env = hosted.slot.request.get("env") or {}
        info = {"id": hosted.id, "name": args.model_name, "path": args.model_path, "handler": args.handler,
                "tmp_dir": args.tmp_dir, "decode": env.get(DECODE_VAR)}
        try:
            socket.send_fds(host.ctl, [b"A" + json.dumps(info).encode()], [hosted.client.fileno()])
        except OSError as exc:
            log.warning("could not hand %s to host %d: %s", args.model_name, host.pid, exc)
            return False
        hosted.host = host
        host.conns[hosted.id] = hosted
        host.served += 1
        return True

    def from_host(self, host: Host) -> None:
        try:
            msg = host.ctl.recv(4096)
        except OSError:
            msg = b""
        if not msg:  # the host is going: its reaping hands its connections on
            host.ended = True
            self.zygote.sel.unregister(host.ctl)
            return
        if msg[:1] == b"d" and msg[1:].isdigit():  # it dropped a deleted model
            self._acked(int(msg[1:]), host.pid)
            return
        kind, _, rest = msg[1:].partition(b" ")
        hosted = self.conns.get(int(kind)) if kind.isdigit() else None
        if hosted is None or hosted.host is not host:
            return
        if msg[:1] == b"L":
            hosted.loaded = True
            hosted.io_name = rest.decode("utf-8", "replace")
        elif msg[:1] == b"X":  # the load failed or MMS hung up: the connection is done
            self._forget(hosted)
        elif msg[:1] == b"M":  # it predicts slowly: the host let it go between two requests
            self._forget(hosted, close=False)
            if self._own_process(hosted, "slow"):
                log.info("model %s predicts slowly in its host (median %s ms): a process of its own from "
                         "now on", hosted.slot.args.model_name, rest.decode("ascii", "replace"))

    def end_slot(self, slot: Slot) -> None:
        """The model was deleted (its launcher went): its host drops it, and the connection closes. A host
        still in that model's request (MMS gave up on it: DELETE, or its response timeout) STUCK_AFTER_S
        later is stuck in it and holds up its other models: it is killed then, and they go to a fresh host
        (check_stuck)."""
        fetched = self.prefetched.pop(slot.args.sock_name, None)
        if fetched is not None and self._open(fetched):
            self._unfetch(fetched, slot)  # MMS never connected (e.g. a DELETE overtook the load)
        for hosted in [h for h in self.conns.values() if h.slot is slot]:
            host = hosted.host
            if _in_request(host, hosted.id) and host.pid in self.hosts and not self.stopping:
                self.suspects[hosted.id] = (host, time.monotonic() + self.stuck_after_s, slot.args.model_name)
            try:
                host.ctl.send(b"D%d" % hosted.id)
                self.acks[hosted.id] = (host.pid, slot)
                slot.pending.add(("host", hosted.id))
            except OSError:
                pass  # the host is gone: nothing of the model is left to drop
            self._forget(hosted)

    def next_deadline(self) -> float | None:
        """When check_stuck has next something to judge."""
        return min((deadline for _host, deadline, _name in self.suspects.values()), default=None)

    def check_stuck(self) -> None:
        """Kill each host still in a deleted model's request past its deadline. The host is stopped
        (SIGSTOP) while its state is read, so one that just moved on to another model's request is never
        killed in it: that request would be answered 500 for a model nobody deleted."""
        now = time.monotonic()
        for conn_id, (host, deadline, name) in list(self.suspects.items()):
            if deadline > now:
                continue
            del self.suspects[conn_id]
            gone = host.ended or host.pid not in self.hosts or self.stopping
            if gone or not self._stopped_in_request(host, conn_id):
                continue
            self.own_process.add(name)  # if MMS starts it again: not in a host
            log.warning("host %d is stuck in a request of deleted model %s: replacing it", host.pid, name)
            self.stuck.add(host.pid)
            os.kill(host.pid, signal.SIGKILL)  # stopped, not reaped: its pid is still ours

    def _stopped_in_request(self, host: Host, conn_id: int) -> bool:
        """Stop `host` and read whether it is still in connection `conn_id`'s request; a host that is not
        is let go on (SIGCONT). One that exited meanwhile is reaped here."""
        if not _in_request(host, conn_id):
            return False  # out of that request, for good (MMS closed its connection): no need to stop it
        try:
            os.kill(host.pid, signal.SIGSTOP)
            pid, status = os.waitpid(host.pid, os.WUNTRACED)  # SIGSTOP lands asynchronously: wait for it
        except (ProcessLookupError, ChildProcessError):
            return False
        if not os.WIFSTOPPED(status):
            self.reaped(pid, status)
            return False
        if _in_request(host, conn_id):
            return True
        os.kill(host.pid, signal.SIGCONT)
        return False

    def _acked(self, conn_id: int, host_pid: int) -> None:
        self.suspects.pop(conn_id, None)  # it dropped the model: out of its request
        entry = self.acks.get(conn_id)
        if entry is not None and entry[0] == host_pid:
            del self.acks[conn_id]
            self.zygote.settled(entry[1], ("host", conn_id))

    def _forget(self, hosted: Hosted, close: bool = True) -> None:
        self.conns.pop(hosted.id, None)
        host = hosted.host
        host.conns.pop(hosted.id, None)
        if not host.conns and host.served >= RECYCLE_AFTER and not host.retiring and not self.stopping \
                and host.pid in self.hosts:
            host.retiring = True  # it drains and exits; its replacement takes new models from now on
            try:
                os.kill(host.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            self._spawn()
        if close:
            hosted.client.close()
        tmp_dir = getattr(hosted.slot.args, "tmp_dir", None)
        if hosted.io_name and tmp_dir:  # MMS's stdout/stderr files of this connection
            for suffix in ("-stdout", "-stderr"):
                try:
                    os.remove(os.path.join(tmp_dir, hosted.io_name + suffix))
                except OSError:
                    pass

    # -- a host's death ------------------------------------------------------------------------------
    def reaped(self, pid: int, status: int) -> bool:
        """The zygote reaped `pid`; True when it was a host (its connections are taken care of)."""
        host = self.hosts.pop(pid, None)
        if host is None:
            return False
        self.zygote.forget_record(pid)  # a host killed, or exiting holding models, leaves its record behind
        for conn_id in [c for c, (p, _slot) in self.acks.items() if p == pid]:
            self._acked(conn_id, pid)  # its record is gone: the DELETEs waiting on it may be answered
        if not host.ended:
            self.zygote.sel.unregister(host.ctl)
        host.ctl.close()
        step, conn_id = host.state.get()
        loading = set(host.state.loading())
        host.state.close()
        if host.retiring and not host.conns:
            log.info("host %d emptied after %d models: replaced by a fresh one", pid, host.served)
        elif not self.stopping:
            log.warning("host %d ended (%s) with %d connections: handing them to a fresh host", pid,
                        _describe(status), len(host.conns))
        oom = oom_kill_count() > host.oom_kills and os.WIFSIGNALED(status)
        if not self.stopping and not host.retiring:  # counted before any of its requests is answered
            self.events.host_replaced("stuck" if pid in self.stuck else "oom_kill" if oom else "died")
        self.stuck.discard(pid)
        fresh = None if self.stopping or host.retiring else self._spawn()
        if fresh is None and not self.stopping:
            fresh = min((h for h in self.hosts.values() if not h.retiring), key=lambda h: len(h.conns),
                        default=None)
        for hosted in list(host.conns.values()):
            if (hosted.id == conn_id and step == BUSY) or hosted.id in loading:
                self._answer_in_flight(hosted, oom)  # a load in a thread is answered as failed
            elif (hosted.id == conn_id and step in (READING, WRITING)) or fresh is None \
                    or not self._send(hosted, fresh):
                self._forget(hosted)  # MMS sees the connection close and restarts the model's worker
        return True

    def _answer_in_flight(self, hosted: Hosted, oom: bool) -> None:
        """Answer the request the dead host had in hand; its model gets a process of its own from now on."""
        self._forget(hosted, close=False)
        if hosted.loaded and self._can_own(hosted.slot):
            self.events.model_moved("host_died")  # before the answer: a client reading the metric sees it
        try:
            status, message = (507, OOM_MESSAGE) if oom else (500, DIED_MESSAGE)
            hosted.client.sendall(mms_protocol.error_frame(status, message))
        except OSError:
            hosted.client.close()
            return
        if not hosted.loaded:
            hosted.client.close()  # it was the load: answered as failed, MMS unregisters the model
            return
        self._own_process(hosted, None)

    def _can_own(self, slot: Slot) -> bool:
        return not (self.stopping or slot.ended or slot.listener is None)

    def _own_process(self, hosted: Hosted, reason: str | None) -> bool:
        """A forked worker of the model's own serves its connection from here on, reloading it first (the
        move is counted under `reason`, unless the caller counted it); False (the connection closed) when the
        model or the container is going."""
        slot = hosted.slot
        if not self._can_own(slot):
            hosted.client.close()
            return False
        if reason is not None:
            self.events.model_moved(reason)
        self.own_process.add(slot.args.model_name)
        args = slot.args
        reload = {"modelName": args.model_name.encode(), "modelPath": args.model_path.encode(),
                  "handler": args.handler.encode()}
        self.zygote._fork_worker(slot, hosted.client, reload)
        return True

    def shutdown(self, deadline: float) -> None:
        """Drain: each host finishes the message in hand and exits; past `deadline` it is killed."""
        self.stopping = True
        for pid in list(self.hosts):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        while self.hosts and time.monotonic() < deadline:
            self.zygote._reap()
            time.sleep(0.02)
        for pid in list(self.hosts):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _in_request(host: Host, conn_id: int) -> bool:
    return host.state.get() in ((BUSY, conn_id), (READING, conn_id))


def _artifact_bytes(path: str, limit: int) -> int:
    """Bytes of the files under `path`, counted until past `limit`."""
    total, files = 0, 0
    for root, _dirs, names in os.walk(path):
        for name in names:
            files += 1
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
            if total > limit or files > MAX_ARTIFACT_FILES:
                return limit + 1
    return total


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.WEXITSTATUS(status)}"
