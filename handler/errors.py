"""Errors the handler raises, each carrying the HTTP status it should be answered with.

Every failure that leaves the handler is an InferenceError with a one-line message; tracebacks go to the
log, never into a response body.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 300


def one_line(text: object, limit: int = MAX_MESSAGE_CHARS) -> str:
    """Collapse whitespace (newlines included) and truncate, so a message fits one log/response line."""
    line = " ".join(str(text).split())
    if len(line) > limit:
        line = line[: limit - 3].rstrip() + "..."
    return line


class InferenceError(Exception):
    """Base class: `.status` is the HTTP status, `.message` a single line without a traceback."""

    status: int = 500

    def __init__(self, message: str = "", status: int | None = None) -> None:
        if status is not None:
            self.status = int(status)
        self.message = one_line(message) or HTTPStatus(self.status).phrase
        super().__init__(self.message)


class BadRequest(InferenceError):
    status = 400


class ModelNotFound(InferenceError):
    status = 404


class NotAcceptable(InferenceError):
    status = 406


class PayloadTooLarge(InferenceError):
    status = 413


class UnsupportedMediaType(InferenceError):
    status = 415


class ModelLoadError(InferenceError):
    """The model artifact is unusable (missing/ambiguous model file, bad checksum, inference.py broken)."""

    status = 400


class InsufficientMemory(InferenceError):
    """507: SageMaker reacts to it by unloading unused models and retrying."""

    status = 507


class UserCodeError(InferenceError):
    """An exception raised inside the model's own code (inference.py functions, model.predict)."""

    status = 500


# Stable names for the "type" field; the HTTP reason phrases differ between Python versions (413).
_TYPE_NAMES = {
    400: "BadRequest",
    404: "ModelNotFound",
    406: "NotAcceptable",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    500: "InternalServerError",
    507: "InsufficientMemory",
}


def error_body(status: int, message: str) -> bytes:
    """The JSON error body: {"code": status, "type": ..., "message": one line}."""
    try:
        fallback = "".join(word.capitalize() for word in HTTPStatus(status).name.split("_"))
    except ValueError:
        fallback = "Error"
    body = {"code": int(status), "type": _TYPE_NAMES.get(status, fallback), "message": one_line(message)}
    return json.dumps(body).encode("utf-8")


def to_error(exc: BaseException) -> InferenceError:
    """Map any exception to an InferenceError; unexpected ones are logged with their traceback."""
    if isinstance(exc, InferenceError):
        return exc
    if isinstance(exc, MemoryError):
        logger.warning("out of memory", exc_info=exc)
        return InsufficientMemory("Insufficient memory")
    logger.error("internal error", exc_info=exc)
    return InferenceError(f"Internal error: {type(exc).__name__}", status=500)
