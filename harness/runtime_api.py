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
_DRAIN_LIMIT = 64 * 1024 * 1024  # read (and drop) oversized bodies up to this so the client sees the 413
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
            manager = self.manager
            body = {
                "container": manager.client.base_url,
                "loaded": manager.loaded(),
                "stats": {k: vars(v) for k, v in manager.stats().items()},
            }
            self._send(200, json.dumps(body).encode(), "application/json")
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

    def do_PUT(self) -> None:
        self._discard_body()
        self._send_error(UnknownOperation(f"no such route: PUT {self._path()}"))

    do_DELETE = do_PUT

    def _discard_body(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if 0 <= length <= _DRAIN_LIMIT:
            self.rfile.read(length)
        else:
            self.close_connection = True

    def _read_body(self) -> bytes:
        raw_length = self.headers.get("Content-Length")
        if raw_length is None:
            self.close_connection = True
            if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                raise ValidationError("chunked request bodies are not supported; send Content-Length")
            return b""
        try:
            length = int(raw_length)
            if length < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise ValidationError(f"invalid Content-Length: {raw_length!r}") from None
        if length > MAX_PAYLOAD:
            self._discard_body()
            # The wording SageMaker uses for this case.
            raise PayloadTooLarge(f"HTTP content length exceeded {MAX_PAYLOAD} bytes.")
        return self.rfile.read(length)

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
        target = self.headers.get("X-Amzn-SageMaker-Target-Model")
        if not target:
            raise ValidationError("TargetModel header is required for a multi-model endpoint.")
        custom = self.headers.get("X-Amzn-SageMaker-Custom-Attributes")
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
        returned_custom = answer.headers.get("x-amzn-sagemaker-custom-attributes")
        if returned_custom is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = returned_custom
        overhead = time.monotonic() - started - result.wait_seconds - result.model_seconds
        self.server.metrics.overhead_latency.observe(max(overhead, 0.0))
        self._send(200, answer.body, answer.content_type, headers)
