"""`/ping` stays answerable when idle connections would take every descriptor (issue 14 item 7), on a real
`container/serve`.

MMS accepted connections until Java ran out of descriptors (~20,000 idle ones here); then nothing more was
accepted and `/ping` timed out. Now open client connections are capped (`MME_MAX_CONNECTIONS`, unset: half of
Java's descriptor limit) and past the cap the longest-idle one is closed for each new one. The descriptor
limit is lowered on the running Java front (as `prlimit` does) instead of opening 20,000 sockets.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psutil
import pytest
import requests

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
SLOW_CODE = """
import time

def predict_fn(data, model):
    time.sleep(3)
    return {"predictions": [1] * len(data)}
"""


def java_of(serve: Serve) -> psutil.Process:
    found = [p for p in psutil.Process(serve.proc.pid).children(recursive=True) if p.name() == "java"]
    assert len(found) == 1, found
    return found[0]


def is_closed(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True  # MMS closes with SO_LINGER 0


def open_idle(serve: Serve, stack: ExitStack, count: int) -> list[socket.socket]:
    socks = []
    for _ in range(count):
        socks.append(stack.enter_context(socket.create_connection(("127.0.0.1", serve.port), timeout=5)))
        time.sleep(0.002)  # one at a time, as clients arrive: the order of idleness is the order here
    return socks


def wait_closed(socks: list[socket.socket], want: int, within: float = 5) -> list[bool]:
    """Which sockets the server closed, once at least `want` are (or `within` seconds passed)."""
    deadline = time.monotonic() + within
    closed = [False] * len(socks)
    while True:
        closed = [c or is_closed(s) for c, s in zip(closed, socks, strict=True)]
        if sum(closed) >= want or time.monotonic() > deadline:
            return closed
        time.sleep(0.05)


def model(tmp: Path, trained: dict, name: str, code: str | None = None) -> Path:
    model_dir = examples.write_model_dir(trained["iris_logreg"], tmp / "models", name)
    if code:
        (model_dir / "code").mkdir()
        (model_dir / "code" / "inference.py").write_text(code)
    return model_dir


@pytest.fixture()
def row(trained: dict) -> str:
    return ",".join(repr(float(v)) for v in trained["iris_logreg"].X[0])


@pytest.fixture()
def low_limit_serve(tmp_path: Path) -> Iterator[Serve]:
    with running_serve(tmp_path, MME_IDLE_CONNECTION_TIMEOUT_SECONDS="600") as serve:
        yield serve


def test_ping_answers_when_idle_connections_would_exhaust_descriptors(
        low_limit_serve: Serve, tmp_path: Path, trained: dict, row: str) -> None:
    serve = low_limit_serve
    assert serve.load("before", model(tmp_path, trained, "before")).status_code == 200
    serve.http.close()  # its kept connection would count among the idle ones
    java = java_of(serve)
    limit = java.num_fds() + 400  # room for 400 more descriptors, no more
    java.rlimit(psutil.RLIMIT_NOFILE, (limit, limit))
    cap = limit // 2  # the default: half of the descriptor limit

    with ExitStack() as stack:
        socks = open_idle(serve, stack, 600)  # 200 more than Java could ever hold at once
        closed = wait_closed(socks, len(socks) - cap)

        t0 = time.monotonic()
        ping = requests.get(f"{serve.url}/ping", timeout=5)
        assert ping.status_code == 200 and time.monotonic() - t0 < 2
        # Nothing loaded is lost, and a new load still finds descriptors for its worker.
        invoked = requests.post(f"{serve.url}/models/before/invoke", data=row,
                                headers={"Content-Type": "text/csv"}, timeout=30)
        assert invoked.status_code == 200, invoked.text
        assert serve.load("after", model(tmp_path, trained, "after"), timeout=60).status_code == 200

        mme = requests.get(f"{serve.url}/mme", timeout=5).json()
        serve.http.close()
        closed = wait_closed(socks, 0, within=0)  # those requests' connections made room too
        open_now = [s for s, c in zip(socks, closed, strict=True) if not c]
        # The longest idle went first: every closed one is older than every open one.
        assert closed.index(False) == sum(closed), [i for i, c in enumerate(closed) if not c]
        assert cap - 10 <= len(open_now) <= cap, (len(open_now), cap)
        assert mme["client_connection_limit"] == cap
        assert mme["idle_connections_closed_for_room"] >= len(socks) - cap
        # The newest kept connection still works (it becomes the most recently used one).
        open_now[-1].sendall(PING)
        assert open_now[-1].recv(65536).startswith(b"HTTP/1.1 200")
    assert java.num_fds() < limit


def test_a_connection_with_a_request_under_way_is_never_closed_for_room(
        tmp_path: Path, trained: dict, row: str) -> None:
    env = {"MME_MAX_CONNECTIONS": "20", "MME_IDLE_CONNECTION_TIMEOUT_SECONDS": "600"}
    with running_serve(tmp_path, **env) as serve:
        assert serve.load("slow", model(tmp_path, trained, "slow", SLOW_CODE)).status_code == 200
        serve.http.close()
        with ExitStack() as stack:
            busy = stack.enter_context(socket.create_connection(("127.0.0.1", serve.port), timeout=15))
            body = row.encode()
            busy.sendall(b"POST /models/slow/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            time.sleep(0.3)  # the invoke is inside the worker's 3 s predict
            socks = open_idle(serve, stack, 40)
            closed = wait_closed(socks, 21)
            # busy is the oldest connection, but has a request under way: the idle ones went instead.
            assert sum(closed) == 21 and not any(closed[21:]), str([i for i, c in enumerate(closed) if c])
            assert busy.recv(65536).startswith(b"HTTP/1.1 200")
            assert requests.get(f"{serve.url}/ping", timeout=5).status_code == 200
