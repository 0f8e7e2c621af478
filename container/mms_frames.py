"""MMS 1.1.11's binary frames between its Java front and a model's worker, read and written in one piece.

MMS's own codec (mms/protocol/otf_message_handler.py) reads a frame field by field, two recv() system
calls per field (~40 for an invoke with its headers), and builds the answer with a dozen bytearray
appends. This reads whatever the socket holds into one buffer and parses it there (one recv for a
usual invoke), and writes the answer with one join. The messages it returns and the bytes it writes are
exactly MMS's own (tests/unit/test_mms_frames.py compares them), so everything above keeps working.
MMS sends a worker one message and waits for its answer, so the buffer never holds more than that one;
`pending()` still tells the caller if it does, since poll() would not.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import struct

from mms.protocol.otf_message_handler import create_predict_response

_INT = struct.Struct("!i")
_CHUNK = 256 * 1024


class _Short(Exception):
    """The buffer ends before the message does; `need` is the length known to be required so far."""

    def __init__(self, need: int) -> None:
        self.need = need


class _Cursor:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytearray) -> None:
        self.buf, self.pos, self.end = buf, 0, len(buf)

    def int(self) -> int:
        pos = self.pos
        if pos + 4 > self.end:
            raise _Short(pos + 4)
        self.pos = pos + 4
        return _INT.unpack_from(self.buf, pos)[0]

    def bytes(self, length: int) -> bytearray:
        pos = self.pos
        if length < 0:
            raise ValueError(f"Invalid field length: {length}")
        if pos + length > self.end:
            raise _Short(pos + length)
        self.pos = pos + length
        return self.buf[pos:pos + length]  # a bytearray, as MMS's reader returns

    def field(self) -> bytearray:
        return self.bytes(self.int())


class FrameReader:
    """Reads MMS's load ("L") and inference ("I") messages from a worker's connection."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        # As MMS's reader, which looks the variable up per field; it never changes within a worker.
        decode = os.environ.get("MMS_DECODE_INPUT_REQUEST")
        self._decode = decode is None or decode == "true"

    def pending(self) -> bool:
        """Bytes of a further message already read from the socket (poll() would not see them)."""
        return bool(self._buf)

    def read(self) -> tuple[bytearray, dict | list]:
        """The next message, as MMS's retrieve_msg returns it: (b"L", dict) or (b"I", list of requests),
        bytes values as bytearray as MMS's are."""
        need = 1
        while True:
            if len(self._buf) >= need:
                cursor = _Cursor(self._buf)
                try:
                    cmd, msg = self._parse(cursor)
                except _Short as short:
                    need = short.need
                else:
                    del self._buf[:cursor.pos]
                    return cmd, msg
            chunk = self._sock.recv(max(_CHUNK, need - len(self._buf)))
            if not chunk:
                logging.info("Frontend disconnected.")
                raise ValueError("Frontend disconnected")
            self._buf += chunk

    def _parse(self, c: _Cursor) -> tuple[bytearray, dict | list]:
        cmd = c.bytes(1)
        if cmd == b"L":
            return cmd, _load_message(c)
        if cmd == b"I":
            requests = []
            while (request := self._request(c)) is not None:
                requests.append(request)
            return cmd, requests
        raise ValueError(f"Invalid command: {cmd}")

    def _request(self, c: _Cursor) -> dict | None:
        length = c.int()
        if length == -1:
            return None
        request: dict = {"requestId": c.bytes(length)}
        headers = []
        while (length := c.int()) != -1:
            name = c.bytes(length)
            headers.append({"name": name, "value": c.field()})
        request["headers"] = headers
        parameters = []
        while (length := c.int()) != -1:
            name = c.bytes(length).decode("utf-8")
            content_type = c.field().decode("utf-8")
            value: object = c.field()
            if self._decode and content_type == "application/json":
                value = json.loads(value.decode("utf-8"))
            elif self._decode and content_type.startswith("text"):
                value = value.decode("utf-8")
            parameters.append({"name": name, "contentType": content_type, "value": value})
        request["parameters"] = parameters
        return request


def _load_message(c: _Cursor) -> dict:
    msg: dict = {"modelName": c.field(), "modelPath": c.field(), "batchSize": c.int(), "handler": c.field()}
    gpu_id = c.int()
    if gpu_id >= 0:
        msg["gpu"] = gpu_id
    msg["ioFileDescriptor"] = c.field()
    return msg


def _text(value: str) -> list[bytes]:
    # MMS frames these by character count and writes their UTF-8 bytes; kept as it is (mms_entry sends
    # ASCII only), since the Java side reads them by that count.
    return [_INT.pack(len(value)), value.encode("utf-8")]


def predict_response(ret: list | None, req_id_map: dict, message: str, code: int, context=None) -> bytes:
    """The bytes of MMS's create_predict_response, built with one join."""
    if ret is not None and not all(isinstance(ret[idx], bytes | bytearray | str) for idx in req_id_map):
        # A handler answering other objects gets MMS's own JSON fallback and its error frame.
        return bytes(create_predict_response(ret, req_id_map, message, code, context=context))
    buf = message.encode("utf-8")
    parts = [_INT.pack(code), _INT.pack(len(buf)), buf]
    for idx, req_id in req_id_map.items():
        rid = req_id.encode("utf-8")
        parts += [_INT.pack(len(rid)), rid]
        if context is None:
            parts += [_INT.pack(0), _INT.pack(code), _INT.pack(0), _INT.pack(0)]
        else:
            content_type = context.get_response_content_type(idx)
            parts += _text(content_type) if content_type else [_INT.pack(0)]
            status, phrase = context.get_response_status(idx)
            parts.append(_INT.pack(status if status is not None else 200))
            parts += _text(phrase if phrase is not None else "")
            headers = context.get_response_headers(idx)
            parts.append(_INT.pack(len(headers)))
            for key, value in headers.items():
                for item in (key.encode("utf-8"), value.encode("utf-8")):
                    parts += [_INT.pack(len(item)), item]
        if ret is None:
            parts += [_INT.pack(5), b"error"]
        else:
            val = ret[idx]
            body = val.encode("utf-8") if isinstance(val, str) else val
            parts += [_INT.pack(len(body)), body]
    parts.append(_INT.pack(-1))
    return b"".join(parts)
