"""The MMS handler entry (`container.mms_entry:handle`): MMS's transport on one side, handler/ on the other.

MMS calls `handle(None, context)` once when a model loads and `handle(batch, context)` per request.
All HTTP meaning lives here: statuses, headers, the error body; handler/ knows nothing of MMS.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import psutil

from sklearn_mme.container.ledger import MemoryLedger
from sklearn_mme.container.settings import Wiring
from sklearn_mme.handler.cache import ModelCache
from sklearn_mme.handler.errors import BadRequest, InferenceError, InsufficientMemory, error_body, to_error
from sklearn_mme.handler.service import ModelService
from sklearn_mme.handler.sizing import measure_bytes
from sklearn_mme.handler.versions import Skew

log = logging.getLogger("mme.entry")

# One process serves one model, but the cache is still the single owner of it (and its size),
# so the same code can later host many models in one pool process.
_CACHE: ModelCache[ModelService] = ModelCache(sizer=lambda service: measure_bytes(service.model))
_WIRING = Wiring.from_env()  # what serve checked and handed down
# MMS's frame limit for an answer (max_response_size, set by serve), less room for the frame's headers.
_MAX_RESPONSE_BYTES = _WIRING.max_response_bytes - 64 * 1024


def _check_room(name: str, nbytes: int, skews: list[Skew]) -> None:
    """507 when this model would not fit: the configured budget, else what the machine has free.

    Every loaded model is recorded in the container-wide ledger (pid -> bytes, name, version skews),
    which is also how tools (and our MMS plugin) find the process that serves a model.
    """
    budget = _WIRING.memory_budget_bytes
    ledger = MemoryLedger(_WIRING.state_dir) if _WIRING.state_dir else None
    if budget and ledger is not None:
        held = ledger.total(exclude_pid=os.getpid())
        if held + nbytes > budget:
            raise InsufficientMemory(
                f"model needs {nbytes} bytes; {held} of the {budget}-byte budget are in use"
            )
    elif psutil.virtual_memory().available < nbytes + _WIRING.memory_reserve_bytes:
        raise InsufficientMemory(f"model needs {nbytes} bytes and the machine has too little free memory")
    if ledger is not None:
        ledger.record(nbytes, name, skews=[(s.library, s.written, s.installed) for s in skews])


def _one_model_room(name: str, key: str, nbytes: int) -> None:
    service = _CACHE.peek(key)
    _check_room(name, nbytes, service.version_skew if service is not None else [])


# A shared host process (container/host_memory.py) swaps in its budget-bounded cache and room check.
_ROOM: Callable[[str, str, int], None] = _one_model_room


def serve_many(cache: ModelCache[ModelService], room: Callable[[str, str, int], None]) -> None:
    """This process hosts many models: `cache` holds them; `room(name, key, nbytes)`, called once a model
    is in the cache, makes room for it (evicting others) or raises InsufficientMemory."""
    global _CACHE, _ROOM
    _CACHE, _ROOM = cache, room


def _load(context) -> None:
    props = context.system_properties
    model_dir = props.get("model_dir")
    name = getattr(context, "model_name", None) or os.path.basename(str(model_dir))
    service = _CACHE.get_or_load(model_dir, lambda: ModelService.load(model_dir))
    size = _CACHE.size_of(model_dir) or 0
    try:
        _ROOM(name, model_dir, size)
    except InsufficientMemory:
        _CACHE.evict(model_dir)
        raise
    log.info("loaded %s from %s (%d bytes measured)", name, model_dir, size)
    return service


def _headers(context, idx: int) -> dict[str, str]:
    raw = context.get_all_request_header(idx) or {}
    return {str(k).lower(): v for k, v in raw.items() if isinstance(v, str)}


def _body(request: dict) -> bytes:
    value = request.get("body")
    if value is None:
        value = request.get("data", b"")
    if isinstance(value, str):
        return value.encode("utf-8")
    return bytes(value or b"")


def handle(data, context):
    if data is None:
        _load(context)
        return None
    model_dir = context.system_properties.get("model_dir")
    service = _CACHE.get(model_dir)
    out = []
    for idx, request in enumerate(data):
        try:
            if service is None:  # evicted or never loaded: load again from the directory
                service = _load(context)
            headers = _headers(context, idx)
            body, content_type = service.invoke(
                _body(request),
                headers.get("content-type"),
                headers.get("accept"),
                headers.get("x-amzn-sagemaker-custom-attributes"),
            )
            if len(body) > _MAX_RESPONSE_BYTES:
                raise BadRequest(f"the answer would be {len(body)} bytes, over the "
                                 f"{_MAX_RESPONSE_BYTES}-byte limit: send fewer rows per request")
            # MMS frames the content type by character count but writes UTF-8 bytes: ASCII only.
            context.set_response_content_type(idx, _ascii(content_type))
            out.append(body)
        except BaseException as exc:
            err = exc if isinstance(exc, InferenceError) else to_error(exc)
            # The reason phrase too: a non-ASCII phrase would corrupt MMS's frame and kill the worker.
            context.set_response_status(err.status, _ascii(err.message[:120]), idx)
            context.set_response_content_type(idx, "application/json")
            out.append(error_body(err.status, err.message))
    return out


def _ascii(text: str) -> str:
    return text.encode("ascii", "replace").decode("ascii")
