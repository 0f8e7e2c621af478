"""Request bodies -> 2-D float64 arrays (rows x features) for CSV, JSON, JSON Lines and .npy; a float64 CSR
matrix for .npz (scipy.sparse)."""

from __future__ import annotations

import csv
import io
import json
import math
import zipfile
from typing import IO

import numpy as np
import scipy.sparse

from sklearn_mme.handler.content_types import (
    CSV,
    JSON,
    JSONLINES,
    NPY,
    NPZ,
    SUPPORTED_CONTENT_TYPES,
    MediaType,
    decode_text,
)
from sklearn_mme.handler.errors import BadRequest, UnsupportedMediaType


def decode(body: bytes | str, media: MediaType) -> np.ndarray | scipy.sparse.csr_matrix:
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


def _plain_csv(text: str) -> list[list[float]] | None:
    """The usual body (no quotes, no CR, every field a number) without the csv module: the same floats,
    since float() ignores the whitespace _csv_float strips. Anything else (None) takes the full path,
    which also words every error."""
    if '"' in text or "\r" in text:
        return None
    try:
        return [list(map(float, line.split(","))) for line in text.split("\n") if line.strip()]
    except ValueError:
        return None


def decode_csv(body: bytes | str, media: MediaType) -> np.ndarray:
    """CSV rows of numbers; no header unless `header=present`; an empty field is NaN."""
    text = decode_text(body, media)
    header = media.params.get("header", "").lower() == "present"
    if not header and (rows := _plain_csv(text)) is not None:
        return _finish(rows)
    try:
        records = [
            r
            for r in csv.reader(io.StringIO(text, newline=""), strict=True)
            if r and any(f.strip() for f in r)
        ]
    except csv.Error as exc:
        raise BadRequest(f"malformed CSV: {exc}") from None
    hint = " (send 'text/csv; header=present' if the first row is a header)"
    if header:
        records, hint = records[1:], ""
    return _finish([_csv_row(record, i, hint if i == 0 else "") for i, record in enumerate(records)])


def _csv_row(record: list[str], row: int, hint: str) -> list[float]:
    """One CSV record; `row` is 0-based over the data rows (blank lines and a declared header not counted)."""
    values = []
    for col, field in enumerate(record):
        try:
            values.append(_csv_float(field))
        except ValueError:
            raise BadRequest(
                f"CSV row {row + 1}, column {col + 1} is not numeric: {_short(field.strip())}{hint}"
            ) from None
    return values


# --- JSON / JSON Lines ---


def _number(value: object, row: int, col: int) -> float:
    """One feature value; `row` and `col` are 0-based and named 1-based in messages."""
    # null is a missing value (JSON has no NaN). A string holding a number is read as the number, as the
    # stock SageMaker scikit-learn container does. bool is an int subclass but never a feature value.
    if value is None:
        return math.nan
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            pass
        except OverflowError:
            raise BadRequest(f"row {row + 1}, column {col + 1} is out of range") from None
    raise BadRequest(f"row {row + 1}, column {col + 1} is not a number: {_short(value)}")


def _row(values: list, row: int) -> list[float]:
    return [_number(v, row, j) for j, v in enumerate(values)]


def _features(item: object, row: int) -> list:
    if isinstance(item, dict) and "features" in item:
        item = item["features"]
    if not isinstance(item, list):
        raise BadRequest(f"row {row + 1} is not a list of numbers")
    return item


def _rows(value: object, offset: int = 0) -> list[list[float]]:
    """A flat list of numbers (one row) or a list of rows; a row may be {"features": [...]}.

    The first element decides which: a list or object starts a list of rows, anything else a single row
    (so `[1, "x"]` is row 1, column 2, not a malformed row 1). `offset` is the rows already read.
    """
    if not isinstance(value, list) or not value:
        raise BadRequest("expected a non-empty list of rows or a single row of numbers")
    if not isinstance(value[0], list | dict):
        return [_row(value, offset)]
    return [_row(_features(item, offset + i), offset + i) for i, item in enumerate(value)]


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


def _npy_header(fp: IO[bytes], data_bytes: int, what: str = ".npy", kinds: str = "biuf") -> tuple:
    """Read and check an .npy header from `fp`: (shape, fortran_order, dtype).

    `data_bytes` is the length of the whole .npy; the declared shape must account for exactly the bytes
    after the header, checked before anything is allocated (numpy allocates the declared shape first).
    Object dtypes are refused, so nothing is ever unpickled.
    """
    try:
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise BadRequest(f"{what} format version {version} is not supported")
    except BadRequest:
        raise
    except Exception as exc:  # numpy's header parser raises many types (ValueError, TokenError, ...)
        raise BadRequest(f"malformed {what} header: {exc}") from None
    if dtype.hasobject or dtype.kind not in kinds:
        raise BadRequest(f"{what} dtype {dtype} is not numeric")
    if any(d < 0 for d in shape) or math.prod(shape) * dtype.itemsize != data_bytes - fp.tell():
        raise BadRequest(f"{what} data length does not match shape {shape} and dtype {dtype}")
    return shape, fortran, dtype


def decode_npy(body: bytes | str, media: MediaType) -> np.ndarray:
    """A .npy array of numbers, 1-D (one row) or 2-D. Never unpickles."""
    if isinstance(body, str):
        raise BadRequest("application/x-npy body must be binary")
    if not body.startswith(_NPY_MAGIC):
        raise BadRequest("body is not a .npy array")
    fp = io.BytesIO(body)
    shape, fortran, dtype = _npy_header(fp, len(body))
    if len(shape) not in (1, 2):
        raise BadRequest(f".npy array must be 1-D or 2-D, got shape {shape}")
    flat = np.frombuffer(body, dtype=dtype, count=math.prod(shape), offset=fp.tell())
    array = flat.reshape(shape[::-1]).T if fortran else flat.reshape(shape)
    if array.ndim == 1:
        array = array.reshape(1, -1)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise BadRequest(f".npy array is empty (shape {shape})")
    return array.astype(np.float64)  # also copies out of the read-only request buffer


# --- .npz (scipy.sparse.save_npz) ---

# What the arrays of one .npz may expand to. A 6 MB deflated body can inflate a thousandfold; this bounds
# what a request can make the worker allocate (and, for a model that needs dense input, the dense copy).
MAX_EXPANDED_BYTES = 256 * 1024 * 1024
SPARSE_FORMATS = ("csr", "csc", "coo")


def decode_npz(body: bytes | str, media: MediaType) -> scipy.sparse.csr_matrix:
    """A sparse matrix written by scipy.sparse.save_npz (csr, csc or coo), as a float64 CSR matrix.

    Each member's .npy header is checked against its size, and the total against MAX_EXPANDED_BYTES,
    before scipy reads it (with allow_pickle=False); indices are checked before any conversion, because
    scipy's and scikit-learn's compiled code trusts them.
    """
    if isinstance(body, str):
        raise BadRequest("application/x-npz body must be binary")
    if body.startswith(_NPY_MAGIC):
        raise BadRequest("body is an .npy array, not an .npz: send it as application/x-npy")
    try:
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            _check_npz_members(archive)
        matrix = scipy.sparse.load_npz(io.BytesIO(body))
    except (BadRequest, MemoryError):
        raise
    except Exception as exc:  # zipfile, zlib, numpy and scipy raise many types for a malformed archive
        raise BadRequest(f"malformed .npz: {type(exc).__name__}: {exc}") from None
    return _sparse_rows(matrix)


def _check_npz_members(archive: zipfile.ZipFile) -> None:
    members = archive.infolist()
    if "format.npy" not in archive.namelist():
        raise BadRequest(".npz holds no sparse matrix (no format array): write it with scipy.sparse.save_npz")
    if sum(m.file_size for m in members) > MAX_EXPANDED_BYTES:
        raise BadRequest(f".npz arrays expand to more than {MAX_EXPANDED_BYTES // (1024 * 1024)} MiB")
    for member in members:
        if not member.filename.endswith(".npy"):
            raise BadRequest(f".npz member {_short(member.filename)} is not an .npy array")
        with archive.open(member) as fp:
            # "S"/"U": the format name is stored as a bytes (or, by old scipy, text) array: b'csr'.
            _npy_header(fp, member.file_size, f".npz member {member.filename}", kinds="biufSU")


def _sparse_rows(matrix: object) -> scipy.sparse.csr_matrix:
    fmt = getattr(matrix, "format", None)
    if fmt not in SPARSE_FORMATS:
        raise BadRequest(f"sparse format {fmt!r} is not supported; send one of {', '.join(SPARSE_FORMATS)}")
    if matrix.dtype.kind not in "biuf":
        raise BadRequest(f".npz dtype {matrix.dtype} is not numeric")
    try:
        if fmt != "coo":  # coo's constructor already refused indices outside its shape
            matrix.check_format(full_check=True)
    except ValueError as exc:
        raise BadRequest(f"malformed sparse matrix: {exc}") from None
    if matrix.ndim == 1:  # a 1-D sparse array: one row, as for .npy
        matrix = matrix.reshape(1, -1)
    rows, cols = matrix.shape
    if rows == 0 or cols == 0:
        raise BadRequest(f"sparse matrix is empty (shape {matrix.shape})")
    if (rows + 1) * 8 > MAX_EXPANDED_BYTES:
        raise BadRequest(f"sparse matrix has too many rows ({rows})")
    return scipy.sparse.csr_matrix(matrix, dtype=np.float64)


_DECODERS = {
    CSV: decode_csv, JSON: decode_json, JSONLINES: decode_jsonlines, NPY: decode_npy, NPZ: decode_npz,
}
