"""Our MMS frame reader/writer and lean predict give exactly what MMS's own codec and Service give."""

from __future__ import annotations

import socket
import struct
import threading

import pytest
from mms.protocol.otf_message_handler import create_predict_response, retrieve_msg
from mms.service import PredictionException, Service

from sklearn_mme.container.mms_frames import FrameReader, predict_response
from sklearn_mme.container.mms_predict import predict


def _field(value: bytes) -> bytes:
    return struct.pack("!i", len(value)) + value


Request = tuple[bytes, list[tuple[bytes, bytes]], list[tuple[bytes, bytes, bytes]]]  # id, headers, params


def invoke_frame(requests: list[Request]) -> bytes:
    """An inference message as MMS's Java front encodes it (CodecUtils / ModelRequestEncoder)."""
    out = b"I"
    for req_id, headers, params in requests:
        out += _field(req_id)
        for name, value in headers:
            out += _field(name) + _field(value)
        out += struct.pack("!i", -1)
        for name, content_type, value in params:
            out += _field(name) + _field(content_type) + _field(value)
        out += struct.pack("!i", -1)
    return out + struct.pack("!i", -1)


def load_frame(name: bytes = b"iris", gpu: int = -1) -> bytes:
    return (b"L" + _field(name) + _field(b"/models/iris") + struct.pack("!i", 1)
            + _field(b"sklearn_mme.container.mms_entry:handle") + struct.pack("!i", gpu) + _field(b"fd-1"))


CSV_REQUEST = invoke_frame([(b"3f2a-req", [(b"Content-Type", b"text/csv"), (b"Accept", b"application/json"),
                                          (b"X-Amzn-SageMaker-Custom-Attributes", b"a=1")],
                             [(b"body", b"text/csv", b"5.1,3.5,1.4,0.2\n")])])
FRAMES = {
    "csv": CSV_REQUEST,
    "json": invoke_frame([(b"r1", [(b"content-type", b"application/json")],
                           [(b"body", b"application/json", b'{"instances": [[1, 2]]}')])]),
    "npy, empty headers, two requests": invoke_frame([
        (b"r1", [], [(b"body", b"application/x-npy", b"\x93NUMPY\x00")]), (b"r2", [(b"h", b"")], [])]),
    "non-ascii": invoke_frame([("ré".encode(), [("x-é".encode(), "ü".encode())],
                               [(b"body", b"text/plain", "ß".encode())])]),
    "load": load_frame(),
    "load with gpu": load_frame(b"m", gpu=0),
}


def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)


@pytest.mark.parametrize("decode", [None, "true", "false"])
@pytest.mark.parametrize("name", sorted(FRAMES))
def test_reader_returns_what_mms_reads(name: str, decode: str | None,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    if decode is None:
        monkeypatch.delenv("MMS_DECODE_INPUT_REQUEST", raising=False)
    else:
        monkeypatch.setenv("MMS_DECODE_INPUT_REQUEST", decode)
    a, b = _pair()
    with a, b:
        a.sendall(FRAMES[name] * 2)
        reader = FrameReader(b)
        ours = reader.read()
        assert reader.pending()  # the second copy is already in our buffer: poll() would not say so
        theirs = retrieve_msg(_Replay(FRAMES[name]))
        assert ours == theirs
        assert _types(ours) == _types(theirs)
        assert reader.read() == theirs and not reader.pending()


class _Replay:
    """A socket stand-in holding one frame, for MMS's field-by-field reader."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def recv(self, n: int) -> bytes:
        out, self.data = self.data[:n], self.data[n:]
        return out


def _types(value: object) -> object:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_types(v) for v in value]
    return type(value).__name__


def test_reader_waits_for_a_frame_sent_byte_by_byte() -> None:
    a, b = _pair()
    with a, b:
        def trickle() -> None:
            for i in range(len(CSV_REQUEST)):
                a.send(CSV_REQUEST[i:i + 1])

        sender = threading.Thread(target=trickle)
        sender.start()
        got = FrameReader(b).read()
        sender.join()
        assert got == retrieve_msg(_Replay(CSV_REQUEST))


def test_a_large_body_is_read_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MMS_DECODE_INPUT_REQUEST", "false")  # as serve configures MMS
    body = b"1.5," * 1_500_000 + b"2"
    frame = invoke_frame([(b"r", [], [(b"body", b"text/csv", body)])])
    a, b = _pair()
    with a, b:
        sender = threading.Thread(target=a.sendall, args=(frame,))
        sender.start()
        cmd, msg = FrameReader(b).read()
        sender.join()
        assert cmd == b"I" and msg[0]["parameters"][0]["value"] == body


def test_a_hang_up_mid_frame_is_mms_disconnect_error() -> None:
    a, b = _pair()
    with b:
        a.sendall(CSV_REQUEST[:20])
        a.close()
        with pytest.raises(ValueError, match="Frontend disconnected"):
            FrameReader(b).read()


def test_an_unknown_command_is_refused() -> None:
    a, b = _pair()
    with a, b:
        a.sendall(b"X" + CSV_REQUEST[1:])
        with pytest.raises(ValueError, match="Invalid command"):
            FrameReader(b).read()


def _entry(answer):
    def handle(data, context):
        if callable(answer):
            return answer(data, context)
        return answer
    return handle


def _answers():
    def ok(data, context):
        for idx in range(len(data)):
            context.set_response_content_type(idx, "application/json")
            context.set_response_header(idx, "x-extra", "v")
        context.set_response_status(400, "bad row", 1) if len(data) > 1 else None
        return [b'{"predictions":[0]}', "text answer"][:len(data)]

    def raises(exc):
        def handle(data, context):
            raise exc
        return handle

    return {
        "success": ok,
        "dict answer (MMS's JSON fallback)": lambda data, context: [{"a": 1}] * len(data),
        "unserialisable answer": lambda data, context: [object()] * len(data),
        "PredictionException": raises(PredictionException("no", 418)),
        "MemoryError": raises(MemoryError()),
        "other exception": raises(RuntimeError("boom")),
        "not a list": lambda data, context: "x",
        "wrong length": lambda data, context: [],
    }


@pytest.mark.parametrize("requests", [1, 2])
@pytest.mark.parametrize("case", sorted(_answers()))
def test_lean_predict_answers_mms_service_bytes(case: str, requests: int, tmp_path) -> None:
    """The same answer frame as MMS's Service.predict, and no per-request metric of ours."""
    frame = invoke_frame([(f"id-{i}".encode(), [(b"Content-Type", b"text/csv")],
                           [(b"body", b"text/csv", b"1,2")]) for i in range(requests)])
    batch = retrieve_msg(_Replay(frame))[1]
    answer = _answers()[case]
    theirs_service = Service("m", str(tmp_path), None, _entry(answer), None, 1)
    ours_service = Service("m", str(tmp_path), None, _entry(answer), None, 1)
    theirs = bytes(theirs_service.predict(batch))
    ours = predict(ours_service, retrieve_msg(_Replay(frame))[1])
    assert ours == theirs
    assert ours_service.context.metrics.store == []


def test_response_writer_matches_mms_without_a_context() -> None:
    assert predict_response(None, {0: "a", 1: "b"}, "Out of resources", 507) == \
        bytes(create_predict_response(None, {0: "a", 1: "b"}, "Out of resources", 507))
    assert predict_response(None, {}, "oom", 507) == bytes(create_predict_response(None, {}, "oom", 507))
