"""HTTP/1.1 pipelining is answered in request order (issue 14 item 3), on a real `container/serve`.

MMS answered each request when its answer was ready: a slow invoke, a fast invoke and a /ping sent in one
write came back ping first, so a pipelining client paired answers with the wrong requests (RFC 9112 §9.3.2
requires request order). Raw sockets here: no HTTP client library pipelines.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

CONSTANT_CODE = """
import time

def predict_fn(data, model):
    time.sleep({sleep})
    return {{"predictions": [{value}] * len(data)}}
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, trained: dict) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("pipelining")
    ex = trained["iris_logreg"]
    with running_serve(tmp) as server:
        for name, value, sleep in (("slow", 1, 0.3), ("fast", 2, 0)):
            model_dir = examples.write_model_dir(ex, tmp / "models", name)
            (model_dir / "code").mkdir()
            (model_dir / "code" / "inference.py").write_text(CONSTANT_CODE.format(value=value, sleep=sleep))
            assert server.load(name, model_dir).status_code == 200
        server.row = ",".join(repr(float(v)) for v in ex.X[0]).encode()  # type: ignore[attr-defined]
        yield server


def invoke(name: str, row: bytes) -> bytes:
    return (b"POST /models/%s/invoke HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (name.encode(), len(row), row))


PING = b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"


class Answers:
    """Reads HTTP answers (Content-Length bodies) one after another off one connection."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.buf = sock, b""

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            return False  # MMS closes with SO_LINGER 0: a close with requests unread is a reset
        self.buf += chunk
        return bool(chunk)

    def next(self) -> tuple[int, dict, bytes] | None:
        """(status, headers, body) of the next answer, or None when the connection closed before one."""
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                assert not self.buf, f"closed inside an answer's head: {self.buf!r}"
                return None
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in lines[1:])}
        length = int(headers["content-length"])
        while len(self.buf) < length:
            assert self._fill(), "closed inside an answer's body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body


def predictions(body: bytes) -> list:
    return json.loads(body)["predictions"]


def test_slow_invoke_fast_invoke_and_ping_in_one_write_are_answered_in_order(serve: Serve) -> None:
    row = serve.row  # type: ignore[attr-defined]
    with socket.create_connection(("127.0.0.1", serve.port), timeout=15) as sock:
        t0 = time.monotonic()
        sock.sendall(invoke("slow", row) + invoke("fast", row) + PING)
        answers = Answers(sock)
        first, second, third = answers.next(), answers.next(), answers.next()
        elapsed = time.monotonic() - t0
    assert first and second and third, (first, second, third)
    assert (first[0], predictions(first[2])) == (200, [1]), first  # the slow model's, not the ping's
    assert (second[0], predictions(second[2])) == (200, [2]), second
    assert third[0] == 200 and json.loads(third[2])["status"] == "Healthy", third
    assert elapsed >= 0.3  # the slow predict ran: the first answer is really the slow one


def test_a_long_pipelined_run_is_answered_in_order_on_a_kept_connection(serve: Serve) -> None:
    row = serve.row  # type: ignore[attr-defined]
    names = ["fast", "slow", "fast", "fast", "slow"] * 4
    with socket.create_connection(("127.0.0.1", serve.port), timeout=30) as sock:
        sock.sendall(b"".join(invoke(n, row) + PING * 50 for n in names))  # 1,020 requests, one write
        answers = Answers(sock)
        for n in names:
            status, _, body = answers.next() or (None, None, b"")
            assert (status, predictions(body)) == (200, [1 if n == "slow" else 2])
            for _ in range(50):
                status, _, body = answers.next() or (None, None, b"")
                assert status == 200 and json.loads(body)["status"] == "Healthy", body
        sock.sendall(PING)  # the connection is still usable afterwards
        assert (answers.next() or (None,))[0] == 200


def test_an_error_answer_closes_the_connection_and_later_requests_get_no_wrong_answer(serve: Serve) -> None:
    row = serve.row  # type: ignore[attr-defined]
    with socket.create_connection(("127.0.0.1", serve.port), timeout=15) as sock:
        sock.sendall(invoke("slow", row) + invoke("missing", row) + PING + invoke("fast", row))
        answers = Answers(sock)
        first, second = answers.next(), answers.next()
        assert first and predictions(first[2]) == [1], first
        assert second and second[0] == 404 and second[1]["connection"] == "close", second  # MMS closes on 4xx
        assert answers.next() is None  # nothing after the close: the client resends them, as RFC 9112 says
