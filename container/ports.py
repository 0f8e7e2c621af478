"""Free loopback ports that multi-model-server accepts, and waiting for a server to answer /ping.

MMS's Java front rejects ports from 32768 up ("Invalid port number"), and Linux hands out ephemeral
ports from 32768, so bind(0) is no use: pick from a range below it instead.
"""

from __future__ import annotations

import http.client
import random
import socket
import time
import urllib.request
from collections.abc import Callable

from sklearn_mme.container.settings import MAX_MMS_PORT

PORT_RANGE = (20000, MAX_MMS_PORT)


def free_port(host: str = "127.0.0.1", low: int = PORT_RANGE[0], high: int = PORT_RANGE[1]) -> int:
    """A port in [low, high] that is free right now on `host`."""
    rng = random.Random()
    for _ in range(200):
        port = rng.randint(low, high)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {low}..{high}")


class NotReady(RuntimeError):
    """A server stopped, or did not answer GET /ping in time; the message says which."""


def wait_for_ping(base_url: str, timeout: float, alive: Callable[[], bool] | None = None,
                  interval: float = 0.2) -> None:
    """Poll GET {base_url}/ping until it answers 200. Raises NotReady as soon as `alive()` turns false
    (the server's process exited), or when `timeout` seconds pass without a 200."""
    deadline = time.monotonic() + timeout
    while True:
        if alive is not None and not alive():
            raise NotReady("stopped before answering /ping")
        try:
            with urllib.request.urlopen(base_url.rstrip("/") + "/ping", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (OSError, http.client.HTTPException):  # refused, reset, an error status, a garbled answer
            pass
        if time.monotonic() >= deadline:
            raise NotReady(f"did not answer /ping within {timeout:.0f}s")
        time.sleep(interval)
