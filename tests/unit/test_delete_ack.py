"""A DELETE's wait for the host (README, known limits): the zygote sends a deleted model's host `D<id>`,
the host drops the model and answers `d<id>`, and only then may the model's launcher exit (so MMS answers
the DELETE). A host that dies instead releases the wait too. Real HostLoop and Hosts, real control socket."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

from sklearn_mme.container.examples import small_model, write_model_dir
from sklearn_mme.container.host_loop import HostLoop, HostState
from sklearn_mme.container.hosts import Host, Hosted, Hosts
from sklearn_mme.container.ledger import MemoryLedger
from sklearn_mme.handler.service import ModelService


def _pair() -> tuple[socket.socket, socket.socket]:
    zygote_end, host_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    zygote_end.settimeout(5)
    host_end.settimeout(5)
    return zygote_end, host_end


def _hosts_holding(ctl_end: socket.socket, conn_id: int,
                   ledger: MemoryLedger | None = None) -> tuple[Hosts, Host, SimpleNamespace, list]:
    """Hosts with one host (pid 4242) serving one model's connection; the zygote records what settled."""
    settled: list = []
    zygote = SimpleNamespace(settled=lambda slot, what: settled.append((slot, what)),
                             forget_record=ledger.forget if ledger is not None else lambda _pid: None,
                             ledger=None)  # the host-event counts stay in memory
    hosts = Hosts(zygote, count=1, max_artifact_bytes=1 << 20, workers_per_model=1)  # type: ignore[arg-type]
    host = Host(pid=4242, ctl=ctl_end, state=HostState(), oom_kills=0)
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
