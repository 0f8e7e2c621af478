"""The 'python' MMS starts for each model: asks the zygote to fork a pre-warmed backend instead.

MMS's Java front runs `<python> model_service_worker.py --sock-name ... --model-path ...` per model.
`container/serve` hands it this script (run with `python -IS`, stdlib only, so it starts in ~10 ms)
as that executable. It passes its argv, environment, working directory and stdio to the zygote, which
then serves the model's socket with workers forked from its pre-warmed interpreter. This process
stays as the model's stand-in for Java: signals sent to it are forwarded, and it exits with the
model's status (re-raising the same signal when the model was ended by one), and it keeps the model's stdio
for the zygote, which asks for it again with `F`, or lets it go with `Q` (launcher_wire.py). If Java
kills it with SIGKILL (as MMS does on DELETE), the zygote sees the socket close and ends the model's workers,
which also watch this process and exit with it.
"""

import array
import json
import os
import signal
import socket
import struct
import sys
import time

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)


def main() -> None:
    if len(sys.argv) < 2 or not sys.argv[1].endswith("model_service_worker.py"):
        # Not a model backend (MMS also runs its metric collector with this 'python'): be python.
        os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
    path = os.environ.get("_MME_ZYGOTE_SOCKET")  # set by serve (container/settings.py Wiring)
    if not path:
        sys.stderr.write("launcher: _MME_ZYGOTE_SOCKET is not set\n")
        sys.exit(2)
    state = {"conn": register(path, adopt=False), "quiet": False}

    def forward(signum, _frame):
        try:
            state["conn"].sendall(b"S%d\n" % signum)
        except OSError:
            pass

    for sig in FORWARDED:
        signal.signal(sig, forward)

    buf = b""
    refusals, since = 0, time.monotonic()
    while True:
        try:
            chunk = state["conn"].recv(4096)
        except ConnectionError:
            chunk = b""
        if not chunk:
            # The zygote died; our model's workers live on. Hand the model to the new zygote. A
            # registration dropped within 10 s counts as refused: back off (as launcher.c does).
            state["conn"].close()
            refusals = refusals + 1 if time.monotonic() - since < 10 else 0
            if refusals:
                time.sleep(min(5.0, 0.05 * 2 ** (refusals - 1)))
            state["conn"] = register(path, adopt=True, quiet=state["quiet"])
            since = time.monotonic()
            buf = b""
            continue
        buf = exit_on_status(buf + chunk, state)


def exit_on_status(buf: bytes, state: dict) -> bytes:
    """Exit as the model did once the zygote says how it ended (`X<waitstatus>`), give it our stdio again
    when it asks (`F`), let our stdio go when told (`Q`); the unread rest."""
    conn = state["conn"]
    while b"\n" in buf:
        line, buf = buf.split(b"\n", 1)
        if line == b"Q":
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.close(null)
            state["quiet"] = True
        elif line == b"F":
            try:
                conn.sendmsg([b"F\n"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
            except OSError:
                pass  # the zygote is going: its successor gets them with our registration
        elif line.startswith(b"X"):
            status = int(line[1:])
            if os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                signal.signal(sig, signal.SIG_DFL)
                os.kill(os.getpid(), sig)
            sys.exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)
    return buf


def register(path: str, adopt: bool, quiet: bool = False) -> socket.socket:
    """Send our argv, environment, cwd and stdio to the zygote, which then serves this model."""
    conn = connect(path)
    request = json.dumps({"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ),
                          "adopt": adopt, "quiet": quiet}).encode()
    frame = struct.pack("!I", len(request)) + request
    try:
        sent = conn.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [0, 1, 2]))])
        if sent < len(frame):
            conn.sendall(frame[sent:])
    except OSError:
        pass  # dropped mid-send: the caller reads the EOF, backs off and registers again
    return conn


def connect(path: str, patience_s: float = 60.0) -> socket.socket:
    """Connect to the zygote, waiting while `serve` restarts it (a crashed zygote is back in ~1 s)."""
    deadline = time.monotonic() + patience_s
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            return conn
        except OSError as exc:
            conn.close()
            if time.monotonic() > deadline:
                sys.stderr.write(f"launcher: cannot reach the zygote at {path}: {exc}\n")
                sys.exit(1)
            time.sleep(0.05)


if __name__ == "__main__":
    main()
