"""MMS's Python worker for one model, with honest load errors and a graceful drain.

MMS's Java front talks to a model's worker over a Unix socket with MMS's binary protocol. We reuse
MMS's worker class and codec, and change three things: a model that fails to load is answered with
its status (400 bad artifact, 507 no room, 500 otherwise) and its reason, which our MMS plugin puts
in the answer after unregistering the model;
on SIGTERM a worker finishes what it was sent and then exits (so a stopping container completes
in-flight requests); and no process we create outlives its model (a zygote's worker follows the
model's launcher and ends what the model's code started; MMS's own workers die with their parent).
With the zygote, `serve_connection` runs in a worker forked per connection; with MME_BACKEND=vanilla,
`main` is MMS's whole backend server in a fresh interpreter.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket
import sys

from mms.arg_parser import ArgParser
from mms.model_service_worker import MXNetModelServiceWorker
from mms.protocol.otf_message_handler import create_load_model_response
from mms.service import emit_metrics

from sklearn_mme.container import stage_clock, worker_output
from sklearn_mme.container.mms_frames import FrameReader
from sklearn_mme.container.mms_predict import predict
from sklearn_mme.container.model_forks import ForkServer
from sklearn_mme.container.procutil import die_with_parent
from sklearn_mme.container.settings import Wiring
from sklearn_mme.container.worker_state import WorkerState
from sklearn_mme.handler.errors import InferenceError

log = logging.getLogger("mme.backend")
DRAIN_IDLE_S = 0.3


class Backend(MXNetModelServiceWorker):
    def load_model(self, load_model_request=None):
        # A failure's message is its reason: our MMS plugin unregisters the model, logs the reason and
        # puts it in the answer's body (LoadAttempt.java). One line, as it goes into a JSON body and a log.
        result, code = self._load(load_model_request)
        return (result, code) if code == 200 else (" ".join(str(result).split()), code)

    def _load(self, load_model_request):
        name = load_model_request["modelName"].decode("utf-8", "replace")
        if "/" in name or "\x00" in name:
            # MMS registers such a name, but no URL can reach it afterwards (invoke, DELETE).
            return "model name may not contain '/' or NUL", 400
        try:
            return super().load_model(load_model_request)
        except InferenceError as exc:
            log.warning("model load failed (%d): %s", exc.status, exc.message)
            return exc.message, exc.status
        except MemoryError:
            return "Out of memory while loading the model", 507
        except Exception as exc:
            log.exception("model load failed")
            return f"Model failed to load: {type(exc).__name__}", 500


    draining = False
    shared: WorkerState | None = None  # set in a zygote's worker: see container/worker_state.py
    forker: ForkServer | None = None  # set in a model's loader: see container/model_forks.py
    # A zygote's worker follows its launcher (worker_process.follow), not its parent: it outlives a zygote.
    follows_launcher = False

    def start_worker(self, cl_socket: socket.socket) -> None:
        """MMS's start_worker, tolerating a worker that never created MMS's stdout/stderr FIFOs (a
        replacement after an OOM kill), and signalling the end with shutdown(): the zygote holds a
        copy of the connection, so closing ours alone would not tell MMS."""
        if not self.follows_launcher:  # MMS's own backend server forked us: die with it
            die_with_parent()
        self.sock.close()
        try:
            self.handle_connection(cl_socket)
        except Exception:
            logging.error("Backend worker process died.", exc_info=True)
        finally:
            for path in (getattr(self, "out", None), getattr(self, "err", None)):
                if path:
                    try:
                        os.remove(path)
                    except OSError:
                        pass
            try:
                cl_socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            cl_socket.close()
            sys.exit(0)

    def reload(self, load_message: dict) -> bool:
        """Load the model a killed predecessor served, as MMS asked it to, without MMS's FIFOs."""
        io_fd = load_message.pop("ioFileDescriptor", b"").decode("utf-8", "replace")
        for suffix in ("-stdout", "-stderr"):  # the predecessor's, left behind by SIGKILL
            try:
                os.remove(os.path.join(self.tmp_dir, io_fd + suffix))
            except OSError:
                pass
        # A failed reload leaves the model registered: MMS restarts the worker.
        result, code = self._load(load_message)
        if code != 200:
            log.warning("replacement worker could not load the model (%d): %s", code, result)
            return False
        if self.shared is not None:
            self.shared.loaded(load_message)
        if self.forker is not None:
            self.forker.loaded()
        return True

    def _remap_io(self) -> None:
        """MMS's worker dup2s its stdout/stderr FIFOs onto fds 1 and 2; a zygote's worker keeps its drained
        pipes (container/worker_output.py) and sends them there instead."""
        if not self.follows_launcher:
            super()._remap_io()
            return
        if not (self.out and self.err):
            return
        output = worker_output.current()
        if output is not None:
            output.retarget((self.out, self.err))
            return
        # A sibling forked from the model's loader: an output of its own, straight into its FIFOs.
        with open(self.out, "wb", buffering=0) as out, open(self.err, "wb", buffering=0) as err:
            worker_output.start(out.fileno(), err.fileno())

    def _drain(self, *_: object) -> None:
        self.draining = True

    def handle_connection(self, cl_socket: socket.socket) -> None:
        """MMS's request loop, plus: after SIGTERM, answer what is already sent, then leave."""
        logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO, force=True)
        signal.signal(signal.SIGTERM, self._drain)
        cl_socket.setblocking(True)
        poller = select.poll()  # not select(): with many models, descriptors pass FD_SETSIZE
        poller.register(cl_socket, select.POLLIN)
        if self.forker is not None:
            poller.register(self.forker.fileno(), select.POLLIN)
        reader = FrameReader(cl_socket)
        clock = stage_clock.from_path(Wiring.from_env().stage_log)
        while True:
            # Draining: leave once MMS has sent nothing for a moment (it may hold a request in its queue).
            ready = [(cl_socket.fileno(), select.POLLIN)] if reader.pending() else \
                poller.poll((DRAIN_IDLE_S if self.draining else 0.5) * 1000)
            if not ready:
                if self.draining:
                    return
                continue
            if self.forker is not None and any(fd == self.forker.fileno() for fd, _ in ready):
                # Between requests, so the sibling starts from a quiet copy of this process.
                if not self.forker.serve_request(self, cl_socket):
                    poller.unregister(self.forker.fileno())
                    self.forker = None
                if not any(fd == cl_socket.fileno() for fd, _ in ready):
                    continue
            if clock is not None:
                clock.mark(stage_clock.READABLE)
            cmd, msg = reader.read()
            if clock is not None:
                clock.mark(stage_clock.DECODED)
            self._answer(cl_socket, cmd, msg, clock if cmd == b"I" else None)

    def _answer(self, cl_socket: socket.socket, cmd: bytes, msg: dict | list,
                clock: stage_clock.StageClock | None = None) -> None:
        """One MMS message: a request ("I") or the model's load ("L")."""
        if cmd == b"I":
            if self.shared is not None:
                self.shared.busy(True)
            cl_socket.sendall(predict(self.service, msg, clock))
            if clock is not None:
                clock.mark(stage_clock.SENT)
                clock.flush()
            if self.shared is not None:
                self.shared.busy(False)
        elif cmd == b"L":
            result, code = self.load_model(msg)
            if code == 200 and self.shared is not None:
                self.shared.loaded(msg)
            cl_socket.sendall(create_load_model_response(code, result))
            if code == 200 and self.forker is not None:
                self.forker.loaded()
            self._remap_io()
            if code != 200:
                raise RuntimeError(f"{code} - {result}")
        else:
            raise ValueError(f"Received unknown command: {cmd}")
        if self.service is not None and self.service.context is not None \
                and self.service.context.metrics is not None:
            emit_metrics(self.service.context.metrics.store)

def serve_connection(client: socket.socket, args, shared: WorkerState | None = None,
                     reload: dict | None = None, forker: ForkServer | None = None) -> int:
    """Serve one MMS connection in this (forked) process: load the model (MMS sends the load message
    first; `reload` is one a killed predecessor recorded), then answer requests, and (`forker`) fork
    the model's further workers from the loaded model when the zygote asks."""
    logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO, force=True)
    model_req = {
        "handler": args.handler.encode("utf-8"),
        "modelPath": args.model_path.encode("utf-8"),
        "modelName": args.model_name.encode("utf-8"),
    }
    # tcp with no bind: MMS's constructor would otherwise delete the model's socket file.
    worker = Backend("tcp", None, "127.0.0.1", "0", model_req, False, args.tmp_dir)
    worker.shared = shared
    worker.forker = forker
    worker.follows_launcher = True
    if reload is not None and not worker.reload(reload):
        client.shutdown(socket.SHUT_RDWR)  # MMS sees the worker die and starts another the usual way
        return 1
    worker.start_worker(client)  # exits via SystemExit when MMS hangs up
    return 0


def main(argv: list[str]) -> int:
    """Entry of a backend server; argv as MMS passes it to model_service_worker.py."""
    # MMS reads our stdout line by line and matches "MMS worker started." exactly: plain format only.
    logging.basicConfig(stream=sys.stdout, format="%(message)s", level=logging.INFO, force=True)
    args = ArgParser.model_service_worker_args().parse_args(argv)
    model_req = {
        "handler": args.handler.encode("utf-8"),
        "modelPath": args.model_path.encode("utf-8"),
        "modelName": args.model_name.encode("utf-8"),
    }
    worker = Backend(args.sock_type, args.sock_name, args.host, args.port, model_req,
                     args.preload_model, args.tmp_dir)
    try:
        worker.run_server()
    except Exception:
        logging.error("Backend worker process died", exc_info=True)
    finally:
        if args.sock_type == "unix" and args.sock_name and os.path.exists(args.sock_name):
            os.remove(args.sock_name)
    return 1


if __name__ == "__main__":
    # MMS passes the path of its model_service_worker.py first; we replace that script.
    args = sys.argv[1:]
    if args and args[0].endswith(".py"):
        args = args[1:]
    sys.exit(main(args))
