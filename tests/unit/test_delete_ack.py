"""A DELETE's wait for the host (README, known limits): the zygote sends a deleted model's host `D<id>`,
the host drops the model and answers `d<id>`, and only then may the model's launcher exit (so MMS answers
the DELETE). A host that dies instead releases the wait too. Real HostLoop and Hosts, real control socket."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import time
from pathlib import Path
from types import SimpleNamespace

from sklearn_mme.container.examples import small_model, write_model_dir
from sklearn_mme.container.host_loop import BUSY, HostLoop, HostState
from sklearn_mme.container.hosts import Host, Hosted, Hosts
from sklearn_mme.container.ledger import MemoryLedger
from sklearn_mme.handler.service import ModelService


def _pair() -> tuple[socket.socket, socket.socket]:
    zygote_end, host_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote_end.settimeout(5)
    host_end.settimeout(5)
    return zygote_end, host_end


def _hosts_holding(ctl_end: socket.socket, conn_id: int, ledger: MemoryLedger | None = None, pid: int = 4242,
                   state: HostState | None = None) -> tuple[Hosts, Host, SimpleNamespace, list]:
    """Hosts with one host serving one model's connection; the zygote records what settled."""
    settled: list = []
    zygote = SimpleNamespace(settled=lambda slot, what: settled.append((slot, what)),
                             forget_record=ledger.forget if ledger is not None else lambda _pid: None,
                             ledger=None)  # the host-event counts stay in memory
    hosts = Hosts(zygote, count=1, max_artifact_bytes=1 << 20, workers_per_model=1)  # type: ignore[arg-type]
    host = Host(pid=pid, ctl=ctl_end, state=state or HostState(), oom_kills=0)
    hosts.hosts[host.pid] = host
    args = SimpleNamespace(model_name="m", model_path="/nowhere", sock_name="/tmp/.mms.sock.m", tmp_dir=None)
    slot = SimpleNamespace(args=args, pending=set())
    client, _peer = socket.socketpair()
    hosted = Hosted(id=conn_id, slot=slot, client=client, host=host)  # type: ignore[arg-type]
    hosts.conns[conn_id] = hosted
    host.conns[conn_id] = hosted
    return hosts, host, slot, settled


def test_the_host_answers_a_delete_once_the_model_is_dropped(tmp_path: Path) -> None:
    zygote_end, host_end = _pair()
    loop = HostLoop(host_end, HostState())
    model_dir = str(write_model_dir(small_model(1), tmp_path / "models"))
    service = loop.memory.cache.get_or_load(model_dir, lambda: ModelService.load(model_dir))
    zygote_end.send(b"D7")  # no connection 7 here: acknowledged all the same, nothing is left to drop
    assert loop._from_zygote()
    assert zygote_end.recv(64) == b"d7"
    assert loop.memory.cache.peek(model_dir) is service  # another connection's model: untouched


def test_the_launcher_waits_for_the_hosts_ack() -> None:
    zygote_end, host_end = _pair()
    hosts, host, slot, settled = _hosts_holding(zygote_end, 5)
    hosts.end_slot(slot)  # type: ignore[arg-type]
    assert host_end.recv(64) == b"D5"
    assert slot.pending == {("host", 5)} and settled == []
    host_end.send(b"d4")  # another connection's ack settles nothing of this model's
    hosts.from_host(host)
    assert settled == []
    host_end.send(b"d5")
    hosts.from_host(host)
    assert settled == [(slot, ("host", 5))] and hosts.acks == {}


def test_a_host_that_dies_before_its_ack_releases_the_wait(tmp_path: Path) -> None:
    ledger = MemoryLedger(tmp_path / "ledger")
    ledger.record(1000, "m", pid=4242)  # what the host recorded before it died
    zygote_end, host_end = _pair()
    hosts, host, slot, settled = _hosts_holding(zygote_end, 9, ledger)
    hosts.end_slot(slot)  # type: ignore[arg-type]
    assert host_end.recv(64) == b"D9"
    hosts.stopping = True  # reaping the host spawns no replacement here
    hosts.zygote.sel = SimpleNamespace(unregister=lambda _sock: None)
    assert hosts.reaped(4242, 9)  # killed by SIGKILL
    assert settled == [(slot, ("host", 9))] and hosts.acks == {}
    assert list(ledger.dir.iterdir()) == []  # its record went at its reaping, not at the next sweep


# -- a host in the deleted model's request -----------------------------------------------------------

def _fake_host(state: HostState) -> tuple[int, socket.socket]:
    """A forked child that plays a host's loop: in connection 5's request until told `n`, then in
    connection 6's (a neighbour's) for good; each step counted in the state's loading list."""
    told, child_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        told.close()
        state.set(BUSY, 5)
        child_end.send(b"r")
        child_end.recv(1)
        state.set(BUSY, 6)
        child_end.send(b"r")
        for beat in itertools.count():
            state.set_loading({beat % 1000 + 1})
            time.sleep(0.001)
    child_end.close()
    assert told.recv(1) == b"r"
    return pid, told


def _proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def _running(state: HostState) -> bool:
    """Whether the child's loop still makes progress (not stopped); a busy machine may hold it off a CPU."""
    before = state.loading()
    deadline = time.monotonic() + 5
    while state.loading() == before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _reap(pid: int) -> int:
    os.kill(pid, signal.SIGKILL)
    return os.waitpid(pid, 0)[1]


def test_a_host_that_moved_on_to_a_neighbours_request_is_not_killed() -> None:
    """The race that failed CI: the host was in the deleted model's request at the DELETE, and in a
    neighbour's a moment later. Killing it then answered the neighbour 500 "The process serving the model
    died"."""
    zygote_end, host_end = _pair()
    state = HostState()
    pid, told = _fake_host(state)
    try:
        hosts, host, slot, settled = _hosts_holding(zygote_end, 5, pid=pid, state=state)
        hosts.stuck_after_s = 0.0
        hosts.end_slot(slot)  # type: ignore[arg-type]
        assert host_end.recv(64) == b"D5"
        assert hosts.suspects and _proc_state(pid) != "Z"  # judged later, not killed at the DELETE
        told.send(b"n")
        assert told.recv(1) == b"r"  # now in the neighbour's request
        hosts.check_stuck()
        assert hosts.suspects == {} and hosts.stuck == set()
        assert _running(state), "the host was left stopped"
    finally:
        assert os.WTERMSIG(_reap(pid)) == signal.SIGKILL  # our kill, not an earlier one


def test_a_host_that_moves_on_while_it_is_judged_is_let_go_on() -> None:
    zygote_end, _host_end = _pair()
    state = HostState()
    pid, told = _fake_host(state)
    try:
        hosts, host, _slot, _settled = _hosts_holding(zygote_end, 5, pid=pid, state=state)
        told.send(b"n")
        assert told.recv(1) == b"r"
        assert not hosts._stopped_in_request(host, 5)  # read with the host stopped: it is in 6's
        assert _running(state), "the host was left stopped"
    finally:
        _reap(pid)


def test_a_host_still_in_the_deleted_models_request_is_killed_at_its_deadline() -> None:
    zygote_end, host_end = _pair()
    state = HostState()
    pid, _told = _fake_host(state)
    hosts, host, slot, _settled = _hosts_holding(zygote_end, 5, pid=pid, state=state)
    hosts.stuck_after_s = 60.0
    hosts.end_slot(slot)  # type: ignore[arg-type]
    assert host_end.recv(64) == b"D5"
    deadline = hosts.next_deadline()
    assert deadline is not None and deadline > time.monotonic()
    hosts.check_stuck()  # before the deadline: nothing yet
    assert hosts.stuck == set() and _proc_state(pid) != "Z"
    hosts.suspects[5] = (host, time.monotonic(), "m")  # the deadline, without waiting a minute for it
    hosts.check_stuck()
    _pid, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert hosts.stuck == {pid} and hosts.own_process == {"m"} and hosts.suspects == {}


def test_a_host_that_drops_the_deleted_model_is_not_judged() -> None:
    zygote_end, host_end = _pair()
    state = HostState()
    state.set(BUSY, 5)
    hosts, host, slot, _settled = _hosts_holding(zygote_end, 5, state=state)
    hosts.stuck_after_s = 0.0
    hosts.end_slot(slot)  # type: ignore[arg-type]
    assert host_end.recv(64) == b"D5" and hosts.suspects
    host_end.send(b"d5")
    hosts.from_host(host)
    assert hosts.suspects == {} and hosts.next_deadline() is None
