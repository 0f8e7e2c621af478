"""MMS 1.1.11's Python-side specifics that the zygote plays: the backend server's argv, its start-up
handshake on stdout, and the answer frame for a request the worker could not answer itself.

MMS's Java front starts `<python> .../model_service_worker.py --sock-name ... --model-path ...` per model,
waits for "MMS worker started." on its stdout, then connects to the socket and speaks MMS's binary frames.
"""

from __future__ import annotations

import argparse
import sys

from mms.arg_parser import ArgParser
from mms.protocol.otf_message_handler import create_predict_response

WORKER_SCRIPT = "model_service_worker.py"


def worker_args(argv: list[str]) -> argparse.Namespace | None:
    """MMS's backend-server arguments (its script path dropped), or None when MMS's parser refuses them."""
    args = [a for a in argv if not a.endswith(WORKER_SCRIPT)]
    try:
        return ArgParser.model_service_worker_args().parse_args(args)
    except SystemExit:
        return None


def handshake(sock_name: str, pid: int) -> str:
    """What MMS waits for on a backend server's stdout before it connects to the model's socket."""
    return (f"Listening on port: {sock_name}\n[PID] {pid}\nMMS worker started.\n"
            f"Python runtime: {sys.version.split()[0]}\n")


def error_frame(status: int, message: str) -> bytes:
    """An answer frame for the request in a worker's hands, sent on the worker's behalf."""
    return create_predict_response(None, {}, message, status)
