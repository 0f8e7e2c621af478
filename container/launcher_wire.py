"""The zygote's side of the launcher protocol (container/launcher.c and launcher.py are the other side).

A launcher registers a model with one message: a 4-byte big-endian length, a JSON object
{"argv": [...], "cwd": "...", "env": {...}, "adopt": bool}, and its stdin/stdout/stderr attached as
SCM_RIGHTS. The C launcher binds the model's socket itself, attaches it fourth and says "announced": true:
it then tells MMS itself that the model started, and MMS may connect before the zygote has read this.
The launcher may then send `S<signum>\\n` to forward a signal; the zygote answers `X<waitstatus>\\n` when
the model ends.

The launcher lives as long as the model and has a descriptor limit of its own, so it is the keeper of the
model's stdio: the zygote lets its copies go once the model's first connection is served (three descriptors
per model fewer in the zygote) and asks for them again with `F\\n` when it forks the model a worker later
(a model moving out of a dead host, an OOM-killed worker's replacement); the launcher answers `F\\n` with its
fds 0, 1, 2 attached. A model served by a shared host needs them no more (a host's output goes to serve's
own): the zygote tells its launcher `Q\\n`, and the launcher points its fds 0, 1, 2 at /dev/null, so MMS's
readers of its stdout and stderr meet EOF and end, with a descriptor and a thread each in Java; it then
registers again (after a zygote restart) with "quiet": true.
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
    """The launcher's registration and its three stdio descriptors, then the model's socket when the
    launcher bound it itself ("announced": it told MMS it started); ValueError/OSError when malformed."""
    fds = array.array("i")
    msg, ancdata, _flags, _addr = conn.recvmsg(4, socket.CMSG_LEN(4 * fds.itemsize))
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    try:
        msg += _recv_exactly(conn, 4 - len(msg))
        (length,) = struct.unpack("!I", msg)
        if length > MAX_REQUEST:
            raise ValueError(f"request of {length} bytes")
        body = _recv_exactly(conn, length)
        request = json.loads(body)
        expected = 4 if isinstance(request, dict) and request.get("announced") else 3
        if len(fds) != expected:
            raise ValueError(f"expected {expected} descriptors, got {len(fds)}")
        return request, list(fds)
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


def ask_stdio(conn: socket.socket, timeout_s: float = 2.0) -> tuple[list[int], bytes]:
    """The model's stdio again, from its launcher (`F`); and whatever else the launcher sent meanwhile
    (signal requests, for the caller). ValueError/OSError when the launcher is gone or does not answer."""
    fds = array.array("i")
    other = b""
    conn.sendall(b"F\n")
    conn.settimeout(timeout_s)
    try:
        while True:
            data, ancdata, _flags, _addr = conn.recvmsg(256, socket.CMSG_LEN(3 * fds.itemsize))
            for level, kind, raw in ancdata:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(raw[: len(raw) - (len(raw) % fds.itemsize)])
            if not data:
                raise ValueError("launcher gone")
            if fds:  # the answer's bytes come with its descriptors: the kernel does not merge past them
                other += data.replace(b"F\n", b"", 1)
                break
            other += data
    except BaseException:
        close_fds(list(fds))
        raise
    finally:
        conn.settimeout(None)
    if len(fds) != 3:
        close_fds(list(fds))
        raise ValueError(f"expected 3 stdio descriptors, got {len(fds)}")
    return list(fds), other


QUIET = b"Q\n"


def exit_message(wait_status: int) -> bytes:
    """Tells the launcher the model ended: it exits the same way (re-raising a signal)."""
    return b"X%d\n" % wait_status


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
