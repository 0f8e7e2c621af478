"""Predictions -> response bodies: JSON, CSV, JSON Lines, .npy.

A prediction is what predict_fn returns: normally {"predictions": [...], "probabilities": [[...]]}; a bare
list/array is taken as the predictions.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np

from sklearn_mme.handler.content_types import CSV, JSON, JSONLINES, NPY, SUPPORTED_ACCEPT
from sklearn_mme.handler.errors import InferenceError, NotAcceptable


def encode(prediction: object, content_type: str) -> bytes:
    """Serialise a prediction as `content_type` (one of SUPPORTED_ACCEPT)."""
    encoder = _ENCODERS.get(content_type)
    if encoder is None:
        raise NotAcceptable(f"cannot produce {content_type!r}; supported: {', '.join(SUPPORTED_ACCEPT)}")
    return encoder(prediction)


def to_plain(obj: object) -> object:
    """numpy arrays/scalars -> Python lists/scalars, recursively; non-finite floats -> None (strict JSON)."""
    if isinstance(obj, np.ndarray):
        obj = obj.tolist()
    elif isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): to_plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [to_plain(v) for v in obj]
    return obj


def _parts(prediction: object, content_type: str) -> tuple[list, list | None]:
    if isinstance(prediction, dict) and "predictions" in prediction:
        preds, probs = prediction["predictions"], prediction.get("probabilities")
    elif isinstance(prediction, list | tuple | np.ndarray):
        preds, probs = prediction, None
    else:
        raise InferenceError(f"cannot encode a {type(prediction).__name__} prediction as {content_type}")
    preds = preds.tolist() if isinstance(preds, np.ndarray) else list(preds)
    if isinstance(probs, np.ndarray):
        probs = probs.tolist()
    if probs is not None and len(probs) != len(preds):
        probs = None  # not one row of probabilities per prediction: nothing sensible to align
    return preds, probs


def encode_json(prediction: object) -> bytes:
    if not isinstance(prediction, dict):
        prediction = {"predictions": prediction}
    try:
        # Fast path, the usual case: plain lists of finite numbers (predict_fn's tolist()) need no walk.
        return json.dumps(prediction, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except (TypeError, ValueError):  # numpy values, non-string keys or NaN/inf: convert, then encode
        return json.dumps(to_plain(prediction), separators=(",", ":")).encode("utf-8")


def encode_jsonlines(prediction: object) -> bytes:
    preds, probs = _parts(prediction, JSONLINES)
    lines = []
    for i, pred in enumerate(preds):
        row: dict[str, object] = {"prediction": pred}
        if probs is not None:
            row["probabilities"] = probs[i]
        lines.append(json.dumps(to_plain(row), separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode("utf-8")


def _fields(value: object) -> list:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    return list(value) if isinstance(value, list | tuple) else [value]


def encode_csv(prediction: object) -> bytes:
    """One line per row: the prediction (several fields if multi-output), then its probabilities."""
    preds, probs = _parts(prediction, CSV)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for i, pred in enumerate(preds):
        writer.writerow(_fields(to_plain(pred)) + (_fields(to_plain(probs[i])) if probs is not None else []))
    return out.getvalue().encode("utf-8")


def encode_npy(prediction: object) -> bytes:
    """The predictions array only, saved without pickle (object arrays become strings)."""
    preds, _ = _parts(prediction, NPY)
    try:
        array = np.asarray(preds)
        if array.dtype.hasobject:
            array = array.astype(np.str_)
    except (TypeError, ValueError):  # ragged, or objects without a string form
        raise InferenceError("predictions cannot be encoded as application/x-npy") from None
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


_ENCODERS = {JSON: encode_json, CSV: encode_csv, JSONLINES: encode_jsonlines, NPY: encode_npy}
