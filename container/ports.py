"""Free loopback ports that multi-model-server accepts.

MMS's Java front rejects ports from 32768 up ("Invalid port number"), and Linux hands out ephemeral
ports from 32768, so bind(0) is no use: pick from a range below it instead.
"""

from __future__ import annotations

import random
import socket

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
