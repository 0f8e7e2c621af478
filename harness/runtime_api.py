"""The SageMaker runtime API as boto3's `sagemaker-runtime` client speaks it, plus /ping and /metrics.

Success: 200, the model's body and Content-Type, `x-Amzn-Invoked-Production-Variant`, the model's custom
attributes. Errors: a JSON body `{"message": ...}` and `x-amzn-ErrorType` (see errors.py). Extra headers tell
whether the model was loaded already (`X-Mme-Cache: hit|miss`) and how long the request waited for a load.
HTTP/1.1 keep-alive; one thread per connection.
"""

from __future__ import annotations

import json
import logging
import re
import socket
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from sklearn_mme.harness.errors import (
    InternalFailure,
    PayloadTooLarge,
    RuntimeApiError,
    UnknownOperation,
    ValidationError,
)
from sklearn_mme.harness.manager import ModelManager
from sklearn_mme.harness.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from sklearn_mme.harness.metrics import HarnessMetrics

log = logging.getLogger("mme_local.api")

MAX_PAYLOAD = 6 * 1024 * 1024  # SageMaker's real-time invocation limit
# After answering a refused body (413, unknown route), read and drop up to this much of it in small pieces,
# for at most _DRAIN_SECONDS: a client still sending would otherwise get a connection reset, not the answer.
_DRAIN_LIMIT = 64 * 1024 * 1024
_DRAIN_SECONDS = 10.0
_DRAIN_CHUNK = 64 * 1024
_INVOCATIONS = re.compile(r"^/endpoints/([^/]+)/invocations$")
_ENDPOINT_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
VARIANT = "AllTraffic"


class RuntimeApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default 5 resets connections when a burst of clients connects at once

    def __init__(
        self,
        address: tuple[str, int],
        manager: ModelManager | None,
        metrics: HarnessMetrics,
        endpoint_name: str | None = None,
    ) -> None:
        self.manager = manager
        self.metrics = metrics
        self.endpoint_name = endpoint_name
        super().__init__(address, _Handler)

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hung up (timeout, Ctrl-C) is routine; anything else is logged with its traceback.
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("client %s went away: %s", client_address, exc)
        else:
            log.exception("error while serving %s", client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "mme-local"
    timeout = 120  # idle keep-alive connections do not hold a thread forever
    server: RuntimeApiServer

    @property
    def manager(self) -> ModelManager:
        manager = self.server.manager
        if manager is None:
            raise RuntimeApiError("the harness is still starting")
        return manager

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle + delayed ACK add ~40 ms to
        # every keep-alive answer.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s - %s", self.address_string(), format % args)

    # ---- plumbing ---------------------------------------------------------------------------------------

    def _send(
        self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_error(self, err: RuntimeApiError, headers: dict[str, str] | None = None) -> None:
        self._send(err.status, err.encode(), "application/json", {**err.headers(), **(headers or {})})

    def _path(self) -> str:
        return urlsplit(self.path).path

    # ---- routes -----------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self._path()
        if path == "/ping":
            self._send(200, b'{"status": "healthy"}', "application/json")
        elif path == "/metrics":
            self._send(200, self.server.metrics.exposition(), METRICS_CONTENT_TYPE)
        elif path == "/mme-local/models":
            self._send(200, json.dumps(self.manager.state()).encode(), "application/json")
        else:
            self._send_error(UnknownOperation(f"no such route: GET {path}"))

    def do_POST(self) -> None:
        path = self._path()
        match = _INVOCATIONS.match(path)
        if not match:
            self._discard_body()
            self._send_error(UnknownOperation(f"no such route: POST {path}"))
            return
        try:
            self._invoke(unquote(match.group(1)))
        except RuntimeApiError as err:
            self._send_error(err)
        except Exception:  # the client gets one line; the traceback goes to the log
            log.exception("invocation failed")
            self._send_error(InternalFailure("internal error in the harness; see its log"))
        finally:
            self._drain_unread()

    def do_PUT(self) -> None:
        self._discard_body()
        self._send_error(UnknownOperation(f"no such route: PUT {self._path()}"))
        self._drain_unread()

    do_DELETE = do_PUT

    # ---- request bodies ---------------------------------------------------------------------------------
    # Only Content-Length framed bodies of at most MAX_PAYLOAD are ever read into memory. A body that is
    # refused is not read before the answer; a length that cannot be trusted (a Transfer-Encoding, with or
    # without Content-Length: the request-smuggling pattern; a bad or repeated Content-Length) closes the
    # connection after the answer, so nothing of it can be taken for a next request.

    _unread = 0  # bytes of a refused body still on the connection, dropped after the answer

    def _body_length(self) -> int:
        """The body's length from Content-Length (0 without one); ValidationError when it is not usable."""
        lengths = self.headers.get_all("Content-Length") or []
        if self.headers.get("Transfer-Encoding") is not None:
            self.close_connection = True
            if lengths:
                raise ValidationError("a request must not carry both Content-Length and Transfer-Encoding")
            raise ValidationError("chunked request bodies are not supported; send Content-Length")
        if not lengths:
            return 0
        raw = lengths[0]
        if len(lengths) > 1 or not raw.strip().isdigit():
            self.close_connection = True
            raise ValidationError(f"invalid Content-Length: {', '.join(lengths)!r}")
        return int(raw)

    def _discard_body(self) -> None:
        """A body nobody reads: dropped after the answer (see _drain_unread)."""
        try:
            self._unread = self._body_length()
        except ValidationError:
            self._unread = 0

    def _drain_unread(self) -> None:
        """Drop what is left of a refused body in small pieces, bounded in bytes and time; close the
        connection when it is more than that."""
        left, self._unread = self._unread, 0
        if not left:
            return
        if left > _DRAIN_LIMIT:
            self.close_connection = True
            return
        deadline = time.monotonic() + _DRAIN_SECONDS
        try:
            while left > 0 and time.monotonic() < deadline:
                self.connection.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = self.rfile.read1(min(left, _DRAIN_CHUNK))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:
            left = 1
        finally:
            self.connection.settimeout(self.timeout)
        if left:
            self.close_connection = True

    def _read_body(self) -> bytes:
        length = self._body_length()
        if length > MAX_PAYLOAD:
            # Answered from Content-Length alone; the body is dropped after the answer, never held.
            self._unread = length
            raise PayloadTooLarge(f"HTTP content length exceeded {MAX_PAYLOAD} bytes.")  # SageMaker's words
        return self.rfile.read(length)

    def _header(self, name: str) -> str | None:
        """A header as the client meant it: http.server decodes header bytes as latin-1, botocore (and
        SageMaker) use UTF-8."""
        value = self.headers.get(name)
        if value is None:
            return None
        try:
            return value.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise ValidationError(f"{name} is not valid UTF-8") from None

    def _invoke(self, endpoint: str) -> None:
        started = time.monotonic()
        body = self._read_body()
        if not _ENDPOINT_NAME.match(endpoint):
            raise ValidationError(
                f"1 validation error detected: Value '{endpoint}' at 'endpointName' failed to "
                "satisfy constraint: Member must satisfy regular expression pattern: "
                "^[a-zA-Z0-9](-*[a-zA-Z0-9])*"
            )
        wanted = self.server.endpoint_name
        if wanted is not None and endpoint != wanted:
            raise ValidationError(f"Endpoint {endpoint} of account 000000000000 not found.")
        target = self._header("X-Amzn-SageMaker-Target-Model")
        if not target:
            raise ValidationError("TargetModel header is required for a multi-model endpoint.")
        custom = self.headers.get("X-Amzn-SageMaker-Custom-Attributes")  # passed on byte for byte
        if custom is not None and len(custom) > 1024:
            raise ValidationError("CustomAttributes must be at most 1024 characters.")
        result = self.manager.invoke(
            target,
            body,
            content_type=self.headers.get("Content-Type"),
            accept=self.headers.get("Accept"),
            custom_attributes=custom,
        )
        answer = result.answer
        headers = {
            "x-Amzn-Invoked-Production-Variant": VARIANT,
            "X-Mme-Cache": "hit" if result.hit else "miss",
            "X-Mme-Load-Wait-Ms": f"{result.wait_seconds * 1000:.1f}",
            "X-Mme-Model-Latency-Ms": f"{result.model_seconds * 1000:.1f}",
        }
        if result.instance is not None:
            headers["X-Mme-Instance"] = str(result.instance)
        returned_custom = answer.headers.get("x-amzn-sagemaker-custom-attributes")
        if returned_custom is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = returned_custom
        overhead = time.monotonic() - started - result.wait_seconds - result.model_seconds
        self.server.metrics.overhead_latency.observe(max(overhead, 0.0))
        self._send(200, answer.body, answer.content_type, headers)
