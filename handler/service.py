"""ModelService: one loaded model and its (default or user) functions, invoked in-process."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

from sklearn_mme.handler import defaults, versions
from sklearn_mme.handler.content_types import TEXT_TYPES, decode_text, negotiate, parse_media_type
from sklearn_mme.handler.errors import (
    InferenceError,
    InsufficientMemory,
    ModelLoadError,
    ModelNotFound,
    NotAcceptable,
    PayloadTooLarge,
    UserCodeError,
    one_line,
    to_error,
)
from sklearn_mme.handler.model_loader import UserCode
from sklearn_mme.handler.settings import Settings, SettingsError, get_settings

logger = logging.getLogger(__name__)

_FUNCTIONS = ("model_fn", "input_fn", "predict_fn", "output_fn")


class ModelService:
    """A loaded model. `invoke` raises InferenceError subclasses only, each carrying its HTTP status."""

    def __init__(
        self, model: object, model_dir: Path, user_code: UserCode | None, settings: Settings
    ) -> None:
        self.model = model
        self.model_dir = model_dir
        self.settings = settings
        self._user_code = user_code
        self._user: set[str] = set()  # names of functions that come from inference.py
        self._fns: dict[str, Callable] = {}
        for name in _FUNCTIONS:
            fn = user_code.function(name) if user_code else None
            if fn is not None:
                self._user.add(name)
            self._fns[name] = fn or getattr(defaults, name)
        self._transform_fn = user_code.function("transform_fn") if user_code else None
        self.version_skew: list[versions.Skew] = []  # what versions.find_skews found at load

    @classmethod
    def load(cls, model_dir: str | os.PathLike) -> ModelService:
        """Import code/inference.py (SAGEMAKER_PROGRAM) if present and run model_fn; a bad artifact raises
        ModelLoadError."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise ModelNotFound(f"model directory {model_dir.name!r} does not exist")
        try:
            settings = get_settings()
        except SettingsError as exc:  # the container's configuration, not the artifact: no 4xx
            raise InferenceError(str(exc), status=500) from None
        user_code = UserCode.load(model_dir, settings.program)
        service = cls(None, model_dir, user_code, settings)
        service._refuse_mixed_transform_fn()
        model_fn = service._fns["model_fn"]
        manifest = versions.read_manifest(model_dir)  # its sha256 is checked before anything is unpickled
        try:
            # The code dir stays importable during model_fn: unpickling may need the helper modules' classes.
            with user_code.scope() if user_code else nullcontext(), \
                    versions.pickled_sklearn_versions() as pickled_sklearn:
                model = model_fn(str(model_dir))
        except InferenceError:
            raise
        except MemoryError:
            raise InsufficientMemory("not enough memory to load the model") from None
        except (Exception, SystemExit) as exc:
            logger.warning("model_fn of %s failed", model_dir, exc_info=exc)
            raise ModelLoadError(f"model_fn failed: {type(exc).__name__}: {exc}") from None
        if model is None:
            raise ModelLoadError("model_fn returned None")
        uses_default_predict = service._transform_fn is None and "predict_fn" not in service._user
        if uses_default_predict and not callable(getattr(model, "predict", None)):
            raise ModelLoadError(f"the loaded {type(model).__name__} has no predict method")
        service.version_skew = versions.find_skews(model, manifest, pickled_sklearn)
        versions.enforce(service.version_skew, settings.version_skew, model_dir.name)
        service.model = model
        return service

    def _refuse_mixed_transform_fn(self) -> None:
        """transform_fn replaces input_fn/predict_fn/output_fn; defining both is an error in the toolkit and
        the stock container, so it is one here too rather than the others being silently ignored."""
        mixed = [name for name in ("input_fn", "predict_fn", "output_fn") if name in self._user]
        if self._transform_fn is not None and mixed:
            program = self._user_code.program if self._user_code else "inference.py"
            raise ModelLoadError(
                f"code/{program} defines transform_fn together with {', '.join(mixed)}: "
                f"define either transform_fn or input_fn/predict_fn/output_fn"
            )

    def invoke(
        self, body: bytes, content_type: str | None, accept: str | None, custom_attributes: str | None = None
    ) -> tuple[bytes, str]:
        """Run one request: returns (response body, response content type).

        `custom_attributes` (X-Amzn-SageMaker-Custom-Attributes) is accepted for the MME contract and not
        passed to user functions, whose toolkit signatures have no place for it.
        """
        try:
            return self._invoke(body, content_type, accept)
        except InferenceError:
            raise
        except Exception as exc:
            raise to_error(exc) from None

    def _invoke(self, body: bytes, content_type: str | None, accept: str | None) -> tuple[bytes, str]:
        settings = self.settings
        body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
        if len(body) > settings.max_payload_bytes:
            raise PayloadTooLarge(
                f"request body is {len(body)} bytes; the limit is {settings.max_payload_bytes} bytes"
            )
        content_type = (content_type or "").strip() or settings.default_content_type
        accept = (accept or "").strip() or None
        # What user functions see for Accept, as in the toolkit: missing or */* means the default.
        user_accept = settings.default_accept if accept in (None, "*/*") else accept

        if self._transform_fn is not None:
            data = self._user_input(body, content_type)
            result = self._call(
                "transform_fn", self._transform_fn, self.model, data, content_type, user_accept
            )
            return self._response(result, user_accept)

        response_type = None
        if "output_fn" not in self._user:
            response_type = negotiate(accept, settings.default_accept)  # fail fast: 406 before predicting
        data_in = self._user_input(body, content_type) if "input_fn" in self._user else body
        data = self._call("input_fn", self._fns["input_fn"], data_in, content_type)
        prediction = self._call("predict_fn", self._fns["predict_fn"], data, self.model)
        result = self._call("output_fn", self._fns["output_fn"], prediction, response_type or user_accept)
        return self._response(result, response_type or user_accept)

    def _user_input(self, body: bytes, content_type: str) -> bytes | str:
        """User functions get text types decoded to str (charset honoured), as the toolkit does."""
        media = parse_media_type(content_type)
        return decode_text(body, media) if media.type in TEXT_TYPES else body

    def _call(self, name: str, fn: Callable, *args: object) -> object:
        if name not in self._user and name != "transform_fn":
            return fn(*args)  # default functions raise InferenceError themselves; the rest maps via to_error
        try:
            return fn(*args)
        except InferenceError:
            raise  # the user chose the status: keep it
        except MemoryError:
            raise InsufficientMemory("Insufficient memory") from None
        except (Exception, SystemExit) as exc:
            logger.warning("%s of %s raised", name, self.model_dir, exc_info=exc)
            status = getattr(exc, "status_code", None)
            if isinstance(status, int) and 400 <= status <= 599:
                # The toolkit's BaseInferenceToolkitError(status_code, message, phrase): keep its status too.
                raise InferenceError(str(getattr(exc, "message", "") or exc), status=status) from None
            raise UserCodeError(f"{name} raised {type(exc).__name__}: {one_line(exc)}") from None

    def _response(self, result: object, accept: str) -> tuple[bytes, str]:
        content_type = None
        if isinstance(result, tuple) and len(result) == 2:  # (body, content type), as the toolkit allows
            result, content_type = result
        if isinstance(result, str):
            result = result.encode("utf-8")
        elif isinstance(result, bytearray | memoryview):
            result = bytes(result)
        if not isinstance(result, bytes):
            raise UserCodeError(f"the response must be bytes or str, got {type(result).__name__}")
        if not content_type:
            try:
                content_type = negotiate(accept, self.settings.default_accept)
            except NotAcceptable:
                content_type = accept.split(",")[0].split(";")[0].strip()
        return result, str(content_type)
