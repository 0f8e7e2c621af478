"""container/worker_output.py on real pipes, in a real child process (it takes over its fds 1 and 2):
bounded lines, UTF-8 with replacement, never blocking the writer, drops counted and reported."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

CHILD = r"""
import os, sys, time
from sklearn_mme.container import worker_output

target, note, go = (int(a) for a in sys.argv[1:4])
out = worker_output.start(target, target)
t0 = time.monotonic()
os.write(1, b"x" * (4 << 20) + b"\n")              # one 4 MiB line, nobody reading the target yet
blocked = time.monotonic() - t0
time.sleep(0.5)                                      # the drain thread meets a full target: drops
os.write(note, b"%f\n" % blocked)                  # tell the parent, which now reads everything
os.read(go, 1)                                       # the parent has emptied the target
os.write(2, b"caf\xe9 cr\xe8me\n")                # latin-1
os.write(1, b"\xe2\x82")                            # half a UTF-8 character ...
time.sleep(0.1)
os.write(1, b"\xac euro\nafter\n")                  # ... and the rest
out.drain(1.0)
time.sleep(0.3)
"""

def test_output_is_bounded_decoded_and_never_blocks_the_writer() -> None:
    target_r, target_w = os.pipe()
    note_r, note_w = os.pipe()
    go_r, go_w = os.pipe()
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(target_w), str(note_w), str(go_r)],
        pass_fds=(target_w, note_w, go_r),
        stdin=subprocess.DEVNULL,
    )
    try:
        for fd in (target_w, note_w, go_r):
            os.close(fd)
        blocked = None
        deadline = time.monotonic() + 30
        got = b""
        while blocked is None:
            assert time.monotonic() < deadline
            ready, _, _ = select.select([note_r], [], [], 0.1)
            if ready:
                blocked = float(os.read(note_r, 64))
        os.set_blocking(target_r, False)
        while True:
            try:
                chunk = os.read(target_r, 1 << 20)
            except BlockingIOError:
                break
            got += chunk
        os.write(go_w, b"g")
        deadline = time.monotonic() + 10
        while b"after\n" not in got and time.monotonic() < deadline:
            ready, _, _ = select.select([target_r], [], [], 0.1)
            if ready:
                got += os.read(target_r, 1 << 20)
    finally:
        child.wait(30)
        for fd in (target_r, note_r, go_w):
            os.close(fd)
    lines = got.split(b"\n")
    assert blocked < 1.0, blocked  # 4 MiB into a target nobody read: the writer never waited for it
    assert all(len(line) < 4096 for line in lines)
    text = got.decode("utf-8")  # all of it valid UTF-8
    assert "caf\ufffd cr\ufffdme" in text and "\u20ac euro" in text
    notice = [line for line in text.splitlines() if "dropped" in line]
    assert len(notice) == 1 and text.index(notice[0]) < text.index("after"), notice
    dropped = int(notice[0].split()[1])
    passed = text.count("x")
    assert passed + dropped >= 4 << 20 and passed > 0, (passed, dropped)
