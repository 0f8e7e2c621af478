"""What a forked worker shares with the zygote: its load message and whether a request is in its hands.

One anonymous shared page per worker, written only by the worker. When the kernel's OOM killer takes a
worker mid-request, the zygote (which keeps its own copy of the worker's MMS connection) reads it to
answer that request with 507 and to start a replacement that loads the same model on the same
connection, so MMS sees one failed request and nothing else.
"""

from __future__ import annotations

import json
import mmap
import os
import struct

IDLE, BUSY = 0, 1
_HEADER = struct.Struct("!BI")  # state, length of the JSON load message that follows
SIZE = mmap.PAGESIZE * 4


class WorkerState:
    def __init__(self, fd: int | None = None) -> None:
        # MAP_SHARED | MAP_ANONYMOUS survives fork, shared both ways; a memfd's map can also be handed
        # to a process the zygote did not fork (a sibling forked from a model's loaded worker).
        self._map = mmap.mmap(-1 if fd is None else fd, SIZE)

    @classmethod
    def shareable(cls) -> tuple[WorkerState, int]:
        """A state backed by a memfd, and that fd (to pass over SCM_RIGHTS, then close)."""
        fd = os.memfd_create("mme-worker-state", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, SIZE)
            return cls(fd), fd
        except BaseException:
            os.close(fd)
            raise

    @classmethod
    def attach(cls, fd: int) -> WorkerState:
        """The state behind a received memfd (the fd is closed; the mapping stays)."""
        try:
            return cls(fd)
        finally:
            os.close(fd)

    def close(self) -> None:
        self._map.close()

    # -- the worker's side --------------------------------------------------------------------
    def loaded(self, load_message: dict) -> None:
        """Record MMS's load message (bytes values as latin-1 text, which round-trips any byte)."""
        plain = {k: bytes(v).decode("latin-1") if isinstance(v, bytes | bytearray) else v
                 for k, v in load_message.items()}
        data = json.dumps(plain).encode()
        if _HEADER.size + len(data) > SIZE:
            return  # a path too long to keep: an OOM kill then gets MMS's usual restart
        self._map[_HEADER.size:_HEADER.size + len(data)] = data
        _HEADER.pack_into(self._map, 0, IDLE, len(data))

    def busy(self, flag: bool) -> None:
        self._map[0] = BUSY if flag else IDLE

    # -- the zygote's side --------------------------------------------------------------------
    def was_busy(self) -> bool:
        return self._map[0] == BUSY

    def load_message(self) -> dict | None:
        _, length = _HEADER.unpack_from(self._map, 0)
        if not length:
            return None
        plain = json.loads(bytes(self._map[_HEADER.size:_HEADER.size + length]))
        return {k: v.encode("latin-1") if isinstance(v, str) else v for k, v in plain.items()}
