"""Request bodies -> 2-D float64 arrays (rows x features), for CSV, JSON, JSON Lines and .npy."""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np
from sklearn_mme.handler.content_types import (
    CSV,
    JSON,
    JSONLINES,
    NPY,
    SUPPORTED_CONTENT_TYPES,
    MediaType,
    decode_text,
)
from sklearn_mme.handler.errors import BadRequest, UnsupportedMediaType


def decode(body: bytes | str, media: MediaType) -> np.ndarray:
    """Decode a request body of a supported media type; 400 for anything malformed, 415 for other types."""
    decoder = _DECODERS.get(media.type)
    if decoder is None:
        raise UnsupportedMediaType(
            f"unsupported content type {media.type!r}; supported: {', '.join(SUPPORTED_CONTENT_TYPES)}"
        )
    if not body or (isinstance(body, str) and not body.strip()):
        raise BadRequest("empty request body")
    return decoder(body, media)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _finish(rows: list[list[float]]) -> np.ndarray:
    if not rows:
        raise BadRequest("no rows in request body")
    width = len(rows[0])
    for i, row in enumerate(rows):
        if not row:
            raise BadRequest(f"row {i + 1} has no features")
        if len(row) != width:
            raise BadRequest(f"row {i + 1} has {len(row)} features, row 1 has {width}")
    return np.asarray(rows, dtype=np.float64)


# --- CSV ---


def _csv_float(field: str) -> float:
    field = field.strip()
    # An empty field is a missing value: NaN, which models that support missing values accept.
    return float(field) if field else math.nan


def decode_csv(body: bytes | str, media: MediaType) -> np.ndarray:
    """CSV rows of numbers; no header unless `header=present`; an empty field is NaN."""
    text = decode_text(body, media)
    try:
        records = [
            r
            for r in csv.reader(io.StringIO(text, newline=""), strict=True)
            if r and any(f.strip() for f in r)
        ]
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from None
    if media.params.get("header", "").lower() == "present":
        records = records[1:]
    rows = []
    for i, record in enumerate(records):
        try:
            rows.append([_csv_float(f) for f in record])
        except ValueError:
            bad = next(f for f in record if not _is_float(f))
            hint = " (send 'text/csv; header=present' if the first row is a header)" if i == 0 else ""
            raise BadRequest(f"CSV row {i + 1} is not numeric: {_short(bad.strip())}{hint}") from None
    return _finish(rows)


def _is_float(field: str) -> bool:
    try:
        _csv_float(field)
    except ValueError:
        return False
    return True


# --- JSON / JSON Lines ---


def _number(value: object, row: int, col: int) -> float:
    # bool is an int subclass but never a feature value; null is a missing value (JSON has no NaN).
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"instance {row + 1}, feature {col + 1} is not a number: {_short(value)}")
    try:
        return float(value)
    except OverflowError:
        raise BadRequest(f"instance {row + 1}, feature {col + 1} is out of range") from None


def _is_scalar(value: object) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _rows(value: object, offset: int = 0) -> list[list[float]]:
    """A flat list of numbers (one row) or a list of rows; a row may be {"features": [...]}."""
    if not isinstance(value, list) or not value:
        raise BadRequest("expected a non-empty list of rows or a single row of numbers")
    if all(_is_scalar(v) for v in value):
        return [[_number(v, offset, j) for j, v in enumerate(value)]]
    rows = []
    for i, item in enumerate(value):
        if isinstance(item, dict) and "features" in item:
            item = item["features"]
        if not isinstance(item, list):
            raise BadRequest(f"instance {offset + i + 1} is not a list of numbers")
        rows.append([_number(v, offset + i, j) for j, v in enumerate(item)])
    return rows


def _loads(text: str, where: str = "") -> object:
    try:
        return json.loads(text)
    except RecursionError:
        raise BadRequest(f"JSON{where} is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, and int-too-large (sys.int_info str digit limit)
        raise BadRequest(f"malformed JSON{where}: {exc}") from None


def decode_json(body: bytes | str, media: MediaType) -> np.ndarray:
    """{"instances": rows}, {"inputs": rows}, a bare list of rows, or one flat row."""
    doc = _loads(decode_text(body, media))
    if isinstance(doc, dict):
        for key in ("instances", "inputs"):
            if key in doc:
                return _finish(_rows(doc[key]))
        raise BadRequest('JSON object must have an "instances" or "inputs" key')
    return _finish(_rows(doc))


def decode_jsonlines(body: bytes | str, media: MediaType) -> np.ndarray:
    """One JSON value per line: a row (list), or an object with "features" or "instances"."""
    rows: list[list[float]] = []
    for n, line in enumerate(decode_text(body, media).split("\n")):
        if not line.strip():
            continue
        doc = _loads(line, f" on line {n + 1}")
        if isinstance(doc, dict):
            key = next((k for k in ("features", "instances") if k in doc), None)
            if key is None:
                raise BadRequest(f'line {n + 1}: JSON object must have a "features" or "instances" key')
            doc = doc[key]
        rows.extend(_rows(doc, offset=len(rows)))
    return _finish(rows)


# --- .npy ---

_NPY_MAGIC = b"\x93NUMPY"


def decode_npy(body: bytes | str, media: MediaType) -> np.ndarray:
    """A .npy array of numbers, 1-D (one row) or 2-D. Never unpickles.

    The header is checked against the body length before any allocation, because numpy allocates the
    declared shape first when reading from memory.
    """
    if isinstance(body, str):
        raise BadRequest("application/x-npy body must be binary")
    if not body.startswith(_NPY_MAGIC):
        raise BadRequest("body is not a .npy array")
    fp = io.BytesIO(body)
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise BadRequest(f".npy format version {version} is not supported")
    except BadRequest:
        raise
    except Exception as exc:  # numpy's header parser raises many types (ValueError, TokenError, ...)
        raise BadRequest(f"malformed .npy header: {exc}") from None
    if dtype.hasobject or dtype.kind not in "biuf":
        raise BadRequest(f".npy dtype {dtype} is not numeric")
    if len(shape) not in (1, 2) or any(d < 0 for d in shape):
        raise BadRequest(f".npy array must be 1-D or 2-D, got shape {shape}")
    count = math.prod(shape)
    if count * dtype.itemsize != len(body) - fp.tell():
        raise BadRequest(f".npy data length does not match shape {shape} and dtype {dtype}")
    flat = np.frombuffer(body, dtype=dtype, count=count, offset=fp.tell())
    array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise BadRequest(f".npy array is empty (shape {shape})")
    return array.astype(np.float64)  # also copies out of the read-only request buffer


_DECODERS = {CSV: decode_csv, JSON: decode_json, JSONLINES: decode_jsonlines, NPY: decode_npy}
