"""The runtime errors SageMaker answers with, shaped so botocore's rest-json parser reads them.

botocore takes the error code from the `x-amzn-ErrorType` header (the part before ':'), the message from the
body's `message` key, and then parses the body again against the modeled error shape, so ModelError's extra
members (OriginalStatusCode, OriginalMessage, LogStreamArn) must be top-level body keys with these names.
"""

from __future__ import annotations

import json
from typing import Any

_VALIDATE_NS = "http://internal.amazon.com/coral/com.amazon.coral.validate/"
_SERVICE_NS = "http://internal.amazon.com/coral/com.amazon.sagemaker/"
LOG_STREAM_ARN = "arn:aws:logs:local:000000000000:log-group:/aws/sagemaker/Endpoints/mme-local"


class RuntimeApiError(Exception):
    """An error answer of the runtime API: HTTP status, error type header, JSON body."""

    status = 500
    error_type: str | None = "InternalFailure"
    namespace = _SERVICE_NS
    instance: int | None = None  # the instance that answered, on a multi-instance endpoint (endpoint.py)

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def clone(self) -> RuntimeApiError:
        """A fresh copy: one stored error may be raised by many waiting threads at once."""
        new = Exception.__new__(type(self))
        new.__dict__.update(self.__dict__)
        new.args = self.args
        return new

    def body(self) -> dict[str, Any]:
        return {"message": self.message}

    def headers(self) -> dict[str, str]:
        out = {} if self.instance is None else {"X-Mme-Instance": str(self.instance)}
        if self.error_type is not None:
            out["x-amzn-ErrorType"] = f"{self.error_type}:{self.namespace}"
        return out

    def encode(self) -> bytes:
        return json.dumps(self.body()).encode()


class ValidationError(RuntimeApiError):
    status = 400
    error_type = "ValidationError"
    namespace = _VALIDATE_NS


class ModelError(RuntimeApiError):
    """The model (container) answered 4xx/5xx; botocore puts the extra fields at the top of the response."""

    status = 424
    error_type = "ModelError"

    def __init__(self, message: str, original_status: int, original_message: str) -> None:
        super().__init__(message)
        self.original_status = original_status
        self.original_message = original_message

    def body(self) -> dict[str, Any]:
        return {
            "ErrorCode": "CLIENT_ERROR_FROM_MODEL"
            if 400 <= self.original_status < 500
            else "SERVER_ERROR_FROM_MODEL",
            "message": self.message,
            "OriginalStatusCode": self.original_status,
            "OriginalMessage": self.original_message,
            "LogStreamArn": LOG_STREAM_ARN,
        }


class ModelNotReadyException(RuntimeApiError):
    status = 429
    error_type = "ModelNotReadyException"


class PayloadTooLarge(RuntimeApiError):
    """SageMaker answers an oversized body with a bare 413 (no error type), so botocore's code is '413'."""

    status = 413
    error_type = None


class InternalFailure(RuntimeApiError):
    status = 500
    error_type = "InternalFailure"


class UnknownOperation(RuntimeApiError):
    status = 404
    error_type = "UnknownOperationException"
