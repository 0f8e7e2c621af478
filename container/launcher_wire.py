"""The zygote's side of the launcher protocol (container/launcher.c and launcher.py are the other side).

A launcher registers a model with one message: a 4-byte big-endian length, a JSON object
{"argv": [...], "cwd": "...", "env": {...}, "adopt": bool}, and its stdin/stdout/stderr attached as
SCM_RIGHTS. It may then send `S<signum>\\n` to forward a signal; the zygote answers `X<waitstatus>\\n` when
the model ends.
"""

from __future__ import annotations

import array
import json
import os
import socket
import struct

MAX_REQUEST = 1 << 20
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def peer_pid(conn: socket.socket) -> int:
    """The launcher's pid, from the kernel (SO_PEERCRED), not from anything it says."""
    return _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))[0]


def read_registration(conn: socket.socket) -> tuple[dict, list[int]]:
    """The launcher's registration and its three stdio descriptors; ValueError/OSError when malformed."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(4, socket.CMSG_LEN(3 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    try:
        msg += _recv_exactly(conn, 4 - len(msg))
        (length,) = struct.unpack("!I", msg)
        if length > MAX_REQUEST:
            raise ValueError(f"request of {length} bytes")
        body = _recv_exactly(conn, length)
        if len(fds) != 3:
            raise ValueError(f"expected 3 stdio descriptors, got {len(fds)}")
        return json.loads(body), list(fds)
    except BaseException:
        close_fds(list(fds))
        raise


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        more = conn.recv(n - len(data))
        if not more:
            raise ValueError("launcher closed early")
        data += more
    return data


def signal_request(data: bytes) -> int | None:
    """The signal a launcher asks to forward (`S<signum>` lines), if `data` holds one."""
    for line in data.split(b"\n"):
        if line.startswith(b"S") and line[1:].isdigit():
            return int(line[1:])
    return None


def exit_message(wait_status: int) -> bytes:
    """Tells the launcher the model ended: it exits the same way (re-raising a signal)."""
    return b"X%d\n" % wait_status


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
