"""Idle client connections are closed (issue 14 item 7), on a real `container/serve`.

MMS kept idle connections forever: ~20,000 of them exhausted Java's descriptors and `/ping` timed out.
`MME_IDLE_CONNECTION_TIMEOUT_SECONDS` (2 s here) closes a connection with no request under way; one in use,
or waiting for a slow answer, stays open.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

IDLE_S = 2
PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"
SLOW_CODE = """
import time

def predict_fn(data, model):
    time.sleep(4)
    return {"predictions": [1] * len(data)}
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("idle")
    with running_serve(tmp, MME_IDLE_CONNECTION_TIMEOUT_SECONDS=str(IDLE_S)) as server:
        yield server


def connect(serve: Serve) -> socket.socket:
    return socket.create_connection(("127.0.0.1", serve.port), timeout=15)


def read_response(sock: socket.socket) -> bytes:
    """One HTTP answer with a Content-Length body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside an answer"
        body += chunk
    return head


def seconds_until_closed(sock: socket.socket) -> float:
    t0 = time.monotonic()
    try:
        assert sock.recv(1) == b"", "data where the close was expected"
    except ConnectionResetError:
        pass  # closed as well (a close with the client's bytes unread is a reset)
    return time.monotonic() - t0


def test_idle_connection_is_closed(serve: Serve) -> None:
    with connect(serve) as never_used, connect(serve) as used_once:
        used_once.sendall(PING)
        assert read_response(used_once).startswith(b"HTTP/1.1 200")
        waited = seconds_until_closed(never_used)
        assert IDLE_S - 0.5 < waited < IDLE_S + 3, waited
        assert seconds_until_closed(used_once) < IDLE_S + 3


def test_active_keep_alive_connection_stays_open(serve: Serve) -> None:
    with connect(serve) as sock:
        for _ in range(6):  # 6 s in all, three times the idle timeout
            sock.sendall(PING)
            assert read_response(sock).startswith(b"HTTP/1.1 200")
            time.sleep(1)
        sock.sendall(PING)
        assert read_response(sock).startswith(b"HTTP/1.1 200")


def test_connection_waiting_for_a_slow_answer_stays_open(serve: Serve, tmp_path: Path, trained: dict) -> None:
    ex = trained["iris_logreg"]
    model_dir = examples.write_model_dir(ex, tmp_path / "models", "slow")
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(SLOW_CODE)
    assert serve.load("slow", model_dir).status_code == 200
    row = ",".join(repr(float(v)) for v in ex.X[0]).encode()
    with connect(serve) as sock:
        sock.sendall(b"POST /models/slow/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(row), row))
        assert read_response(sock).startswith(b"HTTP/1.1 200")  # after 4 s, twice the idle timeout
