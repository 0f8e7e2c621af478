"""MMS's Service.predict for one inference message, without its per-request overheads.

Same context for the handler (request ids, headers through RequestProcessor, a MetricsStore), same
statuses for a failing handler (PredictionException's code, 507 for MemoryError, 503 otherwise) and the
same answer bytes (mms_frames.predict_response). What it leaves out: MMS's per-request `PredictionTime`
metric. Emitting it meant a formatted log line per request on the worker's stdout, which MMS's Java
front reads and logs at a level our log4j2.xml drops anyway; a handler's own metrics are still emitted.
"""

from __future__ import annotations

import logging

from mms.context import RequestProcessor
from mms.metrics.metrics_store import MetricsStore
from mms.service import PredictionException

from sklearn_mme.container.mms_frames import predict_response
from sklearn_mme.container.stage_clock import HANDLE_IN, HANDLE_OUT, StageClock

logger = logging.getLogger("mms.service")  # the logger MMS's own Service writes to


def _requests(batch: list[dict]) -> tuple[list[RequestProcessor], list[dict], dict[int, str]]:
    processors, inputs, req_id_map = [], [], {}
    for idx, request in enumerate(batch):
        req_id_map[idx] = request["requestId"].decode("utf-8")
        headers: dict = {}
        model_in: dict = {}
        for parameter in request["parameters"]:
            model_in[parameter["name"]] = parameter["value"]
            headers[parameter["name"]] = {"content-type": parameter["contentType"]}
        for header in request.get("headers") or ():
            headers[header["name"].decode("utf-8")] = header["value"].decode("utf-8")
        processors.append(RequestProcessor(headers))
        inputs.append(model_in)
    return processors, inputs, req_id_map


def predict(service, batch: list[dict], clock: StageClock | None = None) -> bytes:
    """The answer frame for an inference message, from MMS's `service` (its context and entry point)."""
    if batch is None:
        raise ValueError("Received invalid inputs")
    processors, inputs, req_id_map = _requests(batch)
    context = service.context
    context.request_ids = req_id_map
    context.request_processor = processors
    context.metrics = MetricsStore(req_id_map, context.model_name)
    if clock is not None:
        clock.mark(HANDLE_IN)
    try:
        ret = service._entry_point(inputs, context)
    except PredictionException as exc:
        logger.error("Prediction error", exc_info=True)
        return predict_response(None, req_id_map, exc.message, exc.error_code)
    except MemoryError:
        logger.error("System out of memory", exc_info=True)
        return predict_response(None, req_id_map, "Out of resources", 507)
    except Exception:
        logger.warning("Invoking custom service failed.", exc_info=True)
        return predict_response(None, req_id_map, "Prediction failed", 503)
    if clock is not None:
        clock.mark(HANDLE_OUT)
    if not isinstance(ret, list):
        logger.warning("model: %s, Invalid return type: %s.", context.model_name, type(ret))
        return predict_response(None, req_id_map, "Invalid model predict output", 503)
    if len(ret) != len(inputs):
        logger.warning("model: %s, number of batch response mismatched, expect: %d, got: %d.",
                       context.model_name, len(inputs), len(ret))
        return predict_response(None, req_id_map, "number of batch response mismatched", 503)
    return predict_response(ret, req_id_map, "Prediction success", 200, context=context)
