"""Prefetch (issue 13's cold load): the zygote tells a host to load a model as soon as it registers, and
the host's cache holds it when MMS's load frame arrives; a prefetch whose connection never comes is let go."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from sklearn_mme.container.examples import small_model, write_model_dir
from sklearn_mme.container.host_loop import HostLoop, HostState
from sklearn_mme.container.hosts import Host, Hosts


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    return write_model_dir(small_model(3), tmp_path / "models")


@pytest.fixture
def ctl() -> Iterator[tuple[socket.socket, socket.socket]]:
    """The zygote's end and the host's end of a host's control socket (as Hosts._spawn makes it)."""
    zygote_end, host_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    host_end.settimeout(5)  # a message that never comes fails the test instead of hanging it
    yield zygote_end, host_end
    zygote_end.close()
    host_end.close()


def _join_prefetches() -> None:
    for thread in threading.enumerate():
        if thread.name == "prefetch":
            thread.join(30)


def test_host_loads_a_prefetched_model_and_lets_it_go(model_dir: Path, ctl) -> None:
    zygote_end, host_end = ctl
    loop = HostLoop(host_end, HostState())
    path = str(model_dir)
    zygote_end.send(b"P" + path.encode())
    assert loop._from_zygote()
    _join_prefetches()
    service = loop.memory.cache.peek(path)
    assert service is not None and type(service.model).__name__ == "LogisticRegression"
    # The registration ended before MMS connected: the host drops what it loaded ahead.
    zygote_end.send(b"U" + path.encode())
    assert loop._from_zygote()
    assert loop.memory.cache.peek(path) is None


def test_a_failed_prefetch_leaves_nothing_cached(tmp_path: Path, ctl) -> None:
    zygote_end, host_end = ctl
    loop = HostLoop(host_end, HostState())
    empty = tmp_path / "no-model"
    empty.mkdir()
    zygote_end.send(b"P" + str(empty).encode())
    assert loop._from_zygote()
    _join_prefetches()
    assert loop.memory.cache.keys() == []  # MMS's own load tries again and answers with the reason


def _hosts_with_one(ctl_end: socket.socket) -> tuple[Hosts, Host]:
    hosts = Hosts(SimpleNamespace(ledger=None), count=1, max_artifact_bytes=1 << 20,  # type: ignore[arg-type]
                  workers_per_model=1)
    host = Host(pid=-1, ctl=ctl_end, state=HostState(), oom_kills=0)
    hosts.hosts[host.pid] = host
    return hosts, host


def _slot(model_dir: Path, name: str = "m1") -> SimpleNamespace:
    args = SimpleNamespace(model_name=name, model_path=str(model_dir), sock_name=f"/tmp/.mms.sock.{name}",
                           handler="h", tmp_dir="/tmp")
    return SimpleNamespace(args=args, request={"env": {}}, pending=set())


def test_zygote_side_prefetch_then_connection_goes_to_the_same_host(model_dir: Path, ctl) -> None:
    zygote_end, host_end = ctl
    hosts, host = _hosts_with_one(zygote_end)
    slot = _slot(model_dir)
    hosts.prefetch(slot)  # type: ignore[arg-type]
    assert host_end.recv(4096) == b"P" + str(model_dir).encode()
    mms_side, client = socket.socketpair()
    try:
        assert hosts.take(slot, client)  # type: ignore[arg-type]
        msg, fds, _flags, _addr = socket.recv_fds(host_end, 65536, 1)
        assert msg[:1] == b"A" and json.loads(msg[1:])["path"] == str(model_dir) and len(fds) == 1
        assert hosts.prefetched == {}
        hosts.end_slot(slot)  # type: ignore[arg-type]  # the model's connection is dropped, nothing to unfetch
        assert host_end.recv(4096).startswith(b"D")
    finally:
        mms_side.close()
        client.close()


def test_zygote_side_unfetches_when_mms_never_connects(model_dir: Path, ctl) -> None:
    zygote_end, host_end = ctl
    hosts, _host = _hosts_with_one(zygote_end)
    slot = _slot(model_dir)
    hosts.prefetch(slot)  # type: ignore[arg-type]
    assert host_end.recv(4096) == b"P" + str(model_dir).encode()
    hosts.end_slot(slot)  # type: ignore[arg-type]
    assert host_end.recv(4096) == b"U" + str(model_dir).encode()
    assert hosts.prefetched == {}


def test_no_prefetch_for_a_model_with_its_own_code(model_dir: Path, ctl) -> None:
    zygote_end, host_end = ctl
    hosts, _host = _hosts_with_one(zygote_end)
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text("")
    hosts.prefetch(_slot(model_dir))  # type: ignore[arg-type]
    host_end.setblocking(False)
    with pytest.raises(BlockingIOError):
        host_end.recv(4096)
    assert hosts.prefetched == {}
