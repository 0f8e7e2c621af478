"""XGBoost and LightGBM: native model files as Boosters, and one thread per worker for their estimators.

xgboost and lightgbm are imported only when an artifact needs them (the zygote preloads them if installed,
so forked workers share those pages). A native model is wrapped in `NativeBooster`, which predicts from a
2-D array like any scikit-learn model; its CSV answer is the SageMaker XGBoost container's (see
`BoosterPrediction`).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

from sklearn_mme.handler.errors import ModelLoadError

XGBOOST_MODEL = "xgboost-model"  # the name SageMaker's XGBoost container writes and reads
LIGHTGBM_MODEL = "model.txt"
LIGHTGBM_SUFFIX = ".lgb"
_PICKLE_PROTOCOL_2_PLUS = b"\x80"


def is_native(model_file: Path) -> bool:
    """Whether `model_file` is loaded as a Booster rather than by joblib/skops."""
    return model_file.name in (XGBOOST_MODEL, LIGHTGBM_MODEL) or model_file.suffix.lower() == LIGHTGBM_SUFFIX


class BoosterPrediction(dict):
    """{"predictions": [...]} for JSON/NPY like any model; for text/csv the SageMaker XGBoost container's
    body: every row's value joined by commas on one line (a row of a multi-class model as a list's str)."""

    def __init__(self, raw: np.ndarray) -> None:
        super().__init__(predictions=raw.tolist())

    def csv_body(self) -> bytes:
        return ",".join(map(str, self["predictions"])).encode("utf-8")


class NativeBooster:
    """A native XGBoost or LightGBM Booster behind scikit-learn's `predict(X)`."""

    def __init__(self, booster: object, library: str, written_by: str | None) -> None:
        self.booster = booster
        self.library = library  # "xgboost" or "lightgbm"
        self.written_by = written_by  # the library version the file records, if it does
        if library == "xgboost":
            self.n_features_in_ = int(booster.num_features())
        else:
            self.n_features_in_ = int(booster.num_feature())

    def predict(self, X: object) -> np.ndarray:
        if self.library == "xgboost":
            import xgboost

            # As SageMaker's XGBoost container predicts: no feature-name check (CSV has no header).
            return self.booster.predict(xgboost.DMatrix(X), validate_features=False)
        return self.booster.predict(X, num_threads=1)

    def prediction(self, X: object) -> dict:
        raw = np.asarray(self.predict(X))
        return BoosterPrediction(raw) if self.library == "xgboost" else {"predictions": raw.tolist()}


def load_native(model_file: Path) -> object:
    """`xgboost-model` (JSON, UBJSON, or a pickled Booster as older containers wrote) or a LightGBM text
    model. XGBoost 3 no longer reads its legacy binary format: such a file is a 400 saying how to convert
    it. Other errors propagate; the caller turns them into a 400."""
    if model_file.name == XGBOOST_MODEL:
        raw = model_file.read_bytes()
        if raw.startswith(_PICKLE_PROTOCOL_2_PLUS):  # SageMaker's container tries pickle first, too
            import joblib

            model = joblib.load(model_file)
            if top_module(model) == "xgboost" and type(model).__name__ == "Booster":
                model.set_param("nthread", 1)
                return NativeBooster(model, "xgboost", None)
            return pin_threads(model)
        import xgboost

        if not raw.startswith(b"{"):  # JSON and UBJSON both open with "{"
            raise ModelLoadError(legacy_binary_message(xgboost.__version__, raw.startswith(b"binf")))
        booster = xgboost.Booster()
        booster.load_model(bytearray(raw))  # the format is told by the bytes, not by a file extension
        booster.set_param("nthread", 1)
        return NativeBooster(booster, "xgboost", xgboost_file_version(raw))
    import lightgbm

    booster = lightgbm.Booster(model_file=str(model_file))  # it ignores params; predict passes num_threads
    return NativeBooster(booster, "lightgbm", None)


def legacy_binary_message(installed: str, certain: bool) -> str:
    """Why an `xgboost-model` in XGBoost's old binary format does not load, and how to convert it.
    `certain`: the file has the "binf" header XGBoost 1.x-2.x wrote (pre-1.0 files have none)."""
    what = "is in" if certain else "is neither JSON nor UBJSON: if it is a model, it is in"
    return (f"{XGBOOST_MODEL} {what} XGBoost's legacy binary format, which XGBoost {installed} cannot "
            "read: convert it with XGBoost < 3.0 (`b = xgboost.Booster(model_file='xgboost-model'); "
            "b.save_model('xgboost-model.ubj')`, then rename it xgboost-model)")


def xgboost_file_version(raw: bytes) -> str | None:
    """The XGBoost version a JSON or UBJSON model records ("version": [3, 2, 0]); None if it has none."""
    if raw[:1] != b"{":
        return None
    if raw[1:2] in (b'"', b" ", b"\n", b"\t", b"\r"):  # JSON
        try:
            version = json.loads(raw).get("version")
        except ValueError:
            return None
        ok = isinstance(version, list) and version and all(isinstance(v, int) for v in version)
        return ".".join(map(str, version)) if ok else None
    return _ubjson_version(raw)


_UBJ_INTS = {b"i": ">b", b"U": ">B", b"I": ">h", b"l": ">i", b"L": ">q"}


def _ubjson_version(raw: bytes) -> str | None:
    """The "version" array of a UBJSON model: XGBoost writes it as the last key, `[#L<count>` then
    typed integers."""
    at = raw.rfind(b"\x07version[")
    if at < 0:
        return None
    pos = at + len(b"\x07version[")
    try:
        if raw[pos:pos + 2] != b"#L":
            return None
        (count,) = struct.unpack_from(">q", raw, pos + 2)
        pos += 10
        if not 0 < count <= 4:
            return None
        parts = []
        for _ in range(count):
            fmt = _UBJ_INTS.get(raw[pos:pos + 1])
            if fmt is None:
                return None
            (value,) = struct.unpack_from(fmt, raw, pos + 1)
            parts.append(value)
            pos += 1 + struct.calcsize(fmt)
    except struct.error:
        return None
    return ".".join(map(str, parts))


def estimators(model: object) -> list[object]:
    """`model` and every estimator nested in its parameters (pipeline steps, meta-estimators)."""
    found, todo, seen = [], [model], set()
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        found.append(obj)
        get_params = getattr(obj, "get_params", None)
        if callable(get_params) and not isinstance(obj, type):
            try:
                params = get_params(deep=False)
            except Exception:
                continue
            for value in params.values():
                if isinstance(value, list | tuple):  # Pipeline.steps, ColumnTransformer.transformers
                    todo.extend(v for item in value for v in (item if isinstance(item, tuple) else (item,)))
                elif hasattr(value, "get_params"):
                    todo.append(value)
    return found


def top_module(obj: object) -> str:
    return type(obj).__module__.split(".", 1)[0]


def pin_threads(model: object) -> object:
    """One thread per worker for XGBoost/LightGBM estimators inside a loaded model (they default to all
    cores); a plain Booster gets nthread=1. Returns `model`."""
    for est in estimators(model):
        if top_module(est) not in ("xgboost", "lightgbm"):
            continue
        set_param = getattr(est, "set_param", None)  # xgboost.Booster
        if type(est).__name__ == "Booster" and callable(set_param):
            set_param("nthread", 1)
        elif "n_jobs" in getattr(est, "get_params", dict)():
            est.set_params(n_jobs=1)
    return model
