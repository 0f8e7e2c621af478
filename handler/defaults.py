"""The default model_fn / input_fn / predict_fn / output_fn (the SageMaker toolkit contract).

A model's code/inference.py may override any of them; these are what runs otherwise.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import scipy.sparse

from sklearn_mme.handler.boosters import BoosterPrediction, NativeBooster
from sklearn_mme.handler.content_types import CSV, negotiate, parse_media_type
from sklearn_mme.handler.decoders import MAX_EXPANDED_BYTES, decode
from sklearn_mme.handler.encoders import encode
from sklearn_mme.handler.errors import BadRequest, InferenceError, UserCodeError, one_line
from sklearn_mme.handler.model_loader import find_model_file, load_model_file, verify_sha256
from sklearn_mme.handler.settings import get_settings


def model_fn(model_dir: str | os.PathLike) -> object:
    """Load the model file of `model_dir` (see find_model_file), verifying a `.sha256` sidecar if present."""
    path = find_model_file(Path(model_dir))
    verify_sha256(path)
    return load_model_file(path, get_settings().skops_trusted_types)


def input_fn(input_data: bytes | str, content_type: str | None) -> np.ndarray | scipy.sparse.csr_matrix:
    """Decode a request body to a 2-D float array (a sparse CSR matrix for application/x-npz). No content
    type means text/csv (like SageMaker's sklearn container; MME_DEFAULT_CONTENT_TYPE changes it)."""
    media = parse_media_type(content_type or get_settings().default_content_type)
    return decode(input_data, media)


def check_n_features(data: object, model: object) -> None:
    """400 before predicting when the row width differs from what the model was fitted on."""
    expected = getattr(model, "n_features_in_", None)
    shape = getattr(data, "shape", None)
    if isinstance(expected, int | np.integer) and isinstance(shape, tuple) and len(shape) == 2:
        if shape[1] != expected:
            raise BadRequest(f"expected {int(expected)} features, got {shape[1]}")


def accepts_sparse(model: object) -> bool:
    """Whether `model` takes scipy.sparse input, by scikit-learn's estimator tags; a model without tags
    (not a scikit-learn estimator) is given what the client sent, as the stock container does."""
    try:
        from sklearn.utils import get_tags

        return bool(get_tags(model).input_tags.sparse)
    except Exception:
        return True


def as_model_input(data: object, model: object) -> object:
    """Sparse input stays sparse for a model that accepts it; otherwise it is densified (bounded)."""
    if not scipy.sparse.issparse(data) or accepts_sparse(model):
        return data
    rows, cols = data.shape
    if rows * cols * 8 > MAX_EXPANDED_BYTES:
        raise BadRequest(
            f"this {type(model).__name__} needs dense input and the sparse {rows}x{cols} input is too large "
            f"to densify; send fewer rows"
        )
    return data.toarray()


def _call_model(method, data: object) -> object:
    try:
        return method(data)
    except (InferenceError, MemoryError):
        raise
    except ValueError as exc:  # sklearn's input validation (NaN/inf, shape, dtype): the request's fault
        raise BadRequest(one_line(exc)) from None
    except Exception as exc:
        raise UserCodeError(f"model.{method.__name__} failed: {type(exc).__name__}: {exc}") from None


# Classifiers whose predict is, by scikit-learn's code, the class of the largest predict_proba (trees,
# forests) or of the largest decision score that predict_proba maps through a strictly increasing
# function (logistic regression: expit or softmax). For these one predict_proba call gives both answers.
# Exact types only (by name, so nothing is imported for it): a subclass may override predict.
_PREDICT_IS_ARGMAX_OF_PROBA = frozenset({
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._classes.ExtraTreeClassifier",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.ensemble._forest.ExtraTreesClassifier",
})


def _type_name(obj: object) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def _final_step(model: object) -> object:
    if _type_name(model) == "sklearn.pipeline.Pipeline":  # same transforms for predict and predict_proba
        return model.steps[-1][1]
    return model


def _predictions_from(probabilities: object, model: object) -> np.ndarray | None:
    """The classes predict would return, read off `probabilities`; None when that is not certain: a model
    not in the list above, or a row whose top two probabilities are equal (rounding may have merged two
    different scores there, e.g. expit of a tiny positive score is exactly 0.5)."""
    final = _final_step(model)
    if _type_name(final) not in _PREDICT_IS_ARGMAX_OF_PROBA or getattr(final, "n_outputs_", 1) != 1:
        return None
    classes = getattr(final, "classes_", None)
    if not (isinstance(probabilities, np.ndarray) and probabilities.ndim == 2
            and isinstance(classes, np.ndarray) and probabilities.shape[1] == len(classes) >= 2
            and len(probabilities)):
        return None
    top_two = np.partition(probabilities, -2, axis=1)[:, -2:]
    if not (top_two[:, 1] > top_two[:, 0]).all():
        return None
    return classes.take(np.argmax(probabilities, axis=1))


def predict_fn(data: object, model: object) -> dict[str, list]:
    """{"predictions": [...]} plus "probabilities" (one list per row) when the model has predict_proba; a
    native Booster answers its predict alone (a BoosterPrediction for XGBoost: see output_fn)."""
    check_n_features(data, model)
    data = as_model_input(data, model)
    if isinstance(model, NativeBooster):
        return _call_model(model.prediction, data)
    probabilities = None
    # hasattr is False for pipelines whose last step lacks predict_proba (sklearn's available_if).
    if hasattr(model, "predict_proba"):
        try:
            probabilities = _call_model(model.predict_proba, data)
        except UserCodeError:
            probabilities = None  # e.g. NotImplementedError: the predictions alone are still an answer
    predictions = _predictions_from(probabilities, model)
    if predictions is None:
        predictions = _call_model(model.predict, data)
    # Plain Python lists (NaN kept; the JSON encoder turns non-finite values into null).
    result: dict[str, list] = {"predictions": np.asarray(predictions).tolist()}
    if isinstance(probabilities, np.ndarray) and probabilities.ndim == 2:
        result["probabilities"] = probabilities.tolist()
    return result


def output_fn(prediction: object, accept: str | None) -> tuple[bytes, str]:
    """Encode for the best supported type of `accept` (q-values, wildcards); returns (body, content type)."""
    content_type = negotiate(accept, get_settings().default_accept)
    if content_type == CSV and isinstance(prediction, BoosterPrediction):
        return prediction.csv_body(), content_type
    return encode(prediction, content_type), content_type
