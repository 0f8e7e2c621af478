"""ModelService end to end in-process: loading artifacts, invoking with every codec, errors, user code."""

from __future__ import annotations

import hashlib
import io
import json
import operator
import sys
import textwrap
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse
import skops.io
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, MaxAbsScaler, StandardScaler

from sklearn_mme.container.examples import Example, write_model_dir
from sklearn_mme.handler.errors import (
    BadRequest,
    InferenceError,
    ModelLoadError,
    ModelNotFound,
    NotAcceptable,
    PayloadTooLarge,
    UserCodeError,
)
from sklearn_mme.handler.service import ModelService
from tests.unit.conftest import assert_clean_error

# A classifier, a regressor, a pipeline and a clusterer.
KINDS = ["iris_logreg", "diabetes_ridge", "wine_pipeline", "iris_kmeans"]
ACCEPTS = ["application/json", "text/csv", "application/jsonlines", "application/x-npy"]


def encode_rows(X: np.ndarray, content_type: str) -> bytes:
    if content_type == "text/csv":
        return "\n".join(",".join(repr(v) for v in row) for row in X.tolist()).encode()
    if content_type == "application/json":
        return json.dumps({"instances": X.tolist()}).encode()
    if content_type == "application/jsonlines":
        return "\n".join(json.dumps(row) for row in X.tolist()).encode()
    buf = io.BytesIO()
    np.save(buf, X)
    return buf.getvalue()


def decode_predictions(body: bytes, content_type: str, n_proba: int) -> list:
    if content_type == "application/json":
        return json.loads(body)["predictions"]
    if content_type == "application/jsonlines":
        return [json.loads(line)["prediction"] for line in body.decode().splitlines()]
    if content_type == "text/csv":
        rows = [line.split(",") for line in body.decode().splitlines()]
        assert all(len(r) == 1 + n_proba for r in rows)
        return [float(r[0]) for r in rows]
    return np.load(io.BytesIO(body), allow_pickle=False).tolist()


@pytest.fixture(scope="module")
def services(examples, tmp_path_factory) -> dict[str, ModelService]:
    root = tmp_path_factory.mktemp("models")
    return {kind: ModelService.load(write_model_dir(examples[kind], root)) for kind in KINDS}


def write_code(model_dir: Path, source: str, name: str = "inference.py") -> None:
    code = model_dir / "code"
    code.mkdir(exist_ok=True)
    (code / name).write_text(textwrap.dedent(source))


def error_of(fn, *args, **kwargs) -> InferenceError:
    with pytest.raises(InferenceError) as info:
        fn(*args, **kwargs)
    return info.value


# --- predictions through every codec equal model.predict ---


@pytest.mark.parametrize(
    "content_type", ["text/csv", "application/json", "application/jsonlines", "application/x-npy"]
)
@pytest.mark.parametrize("kind", KINDS)
def test_predictions_match_in_process_for_each_content_type(services, examples, kind, content_type):
    example = examples[kind]
    body, response_type = services[kind].invoke(encode_rows(example.X, content_type), content_type, None)
    assert response_type == "application/json"
    out = json.loads(body)
    np.testing.assert_allclose(out["predictions"], example.model.predict(example.X))
    if hasattr(example.model, "predict_proba"):
        np.testing.assert_allclose(out["probabilities"], example.model.predict_proba(example.X))
    else:
        assert "probabilities" not in out


@pytest.mark.parametrize("accept", ACCEPTS)
@pytest.mark.parametrize("kind", KINDS)
def test_predictions_match_in_process_for_each_accept(services, examples, kind, accept):
    example = examples[kind]
    body, response_type = services[kind].invoke(
        encode_rows(example.X, "application/json"), "application/json", accept
    )
    assert response_type == accept
    n_proba = (
        example.model.predict_proba(example.X).shape[1] if hasattr(example.model, "predict_proba") else 0
    )
    got = decode_predictions(body, accept, n_proba)
    np.testing.assert_allclose(got, example.model.predict(example.X))


def test_content_type_params_case_and_default(services, examples):
    example = examples["iris_logreg"]
    expected = example.model.predict(example.X).tolist()
    csv = encode_rows(example.X, "text/csv")
    for content_type in (None, "", "TEXT/CSV; charset=UTF-8"):
        assert (
            json.loads(services["iris_logreg"].invoke(csv, content_type, "*/*")[0])["predictions"] == expected
        )
    with_header = b"a,b,c,d\n" + csv
    body, _ = services["iris_logreg"].invoke(with_header, "text/csv; header=present", None)
    assert json.loads(body)["predictions"] == expected


def test_accept_q_values_choose_the_response_type(services, examples):
    body = encode_rows(examples["iris_logreg"].X, "text/csv")
    assert services["iris_logreg"].invoke(body, "text/csv", "text/html, text/csv;q=0.8")[1] == "text/csv"
    accept = "application/json;q=0.5, application/jsonlines"
    assert services["iris_logreg"].invoke(body, "text/csv", accept)[1] == "application/jsonlines"


def test_default_accept_from_env(set_env, model_dir, examples):
    set_env(SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT="text/csv")
    service = ModelService.load(model_dir)
    body, response_type = service.invoke(
        encode_rows(examples["iris_logreg"].X, "text/csv"), "text/csv", "*/*"
    )
    assert response_type == "text/csv" and body.count(b"\n") == len(examples["iris_logreg"].X)


def test_pipeline_without_predict_proba_has_no_probabilities(tmp_path, examples):
    X = examples["wine_pipeline"].X
    pipe = make_pipeline(StandardScaler(), Ridge()).fit(X, np.arange(len(X)))
    service = ModelService.load(write_model_dir(Example("ridge_pipe", pipe, X), tmp_path))
    out = json.loads(service.invoke(encode_rows(X, "text/csv"), "text/csv", None)[0])
    assert set(out) == {"predictions"}
    np.testing.assert_allclose(out["predictions"], pipe.predict(X))


# --- application/x-npz: sparse input ---


def npz_bytes(matrix) -> bytes:
    buf = io.BytesIO()
    scipy.sparse.save_npz(buf, matrix)
    return buf.getvalue()


@pytest.fixture(scope="module")
def sparse_data() -> tuple[scipy.sparse.csr_matrix, np.ndarray]:
    """Bag-of-words-like data: 300 rows, 60 columns, 8% non-zero."""
    rng = np.random.default_rng(7)
    X = scipy.sparse.random(300, 60, density=0.08, format="csr", random_state=rng)
    y = (X @ rng.normal(size=60) > 0).astype(int) + (X[:, 0].toarray().ravel() > 0.5)
    return X, y


def _dump(model: object, model_dir: Path) -> Path:
    model_dir.mkdir()
    joblib.dump(model, model_dir / "model.joblib")
    return model_dir


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(max_iter=2000),
        lambda: make_pipeline(MaxAbsScaler(), LogisticRegression(max_iter=2000)),
        lambda: Ridge(),
    ],
    ids=["logreg", "maxabs_logreg_pipeline", "ridge"],
)
def test_npz_reaches_a_model_trained_on_sparse_data_still_sparse(tmp_path, sparse_data, make):
    X, y = sparse_data
    model = make().fit(X, y)
    service = ModelService.load(_dump(model, tmp_path / "m"))
    seen: list[object] = []
    method = "predict_proba" if hasattr(model, "predict_proba") else "predict"
    real = getattr(service.model, method)
    setattr(service.model, method, lambda data: seen.append(data) or real(data))  # records what predict got
    for fmt in ("csr", "csc", "coo"):
        body, response_type = service.invoke(npz_bytes(X.asformat(fmt)), "application/x-npz", None)
        out = json.loads(body)
        assert response_type == "application/json"
        np.testing.assert_allclose(out["predictions"], model.predict(X), rtol=1e-12)
        if method == "predict_proba":
            assert out["predictions"] == model.predict(X).tolist()
            np.testing.assert_allclose(out["probabilities"], model.predict_proba(X), rtol=1e-12)
    assert len(seen) == 3 and all(scipy.sparse.issparse(data) for data in seen)


def test_npz_is_densified_for_a_model_that_needs_dense_input(tmp_path, sparse_data):
    X, y = sparse_data
    dense = X.toarray()
    model = HistGradientBoostingClassifier(max_iter=20).fit(dense, y)
    service = ModelService.load(_dump(model, tmp_path / "m"))
    out = json.loads(service.invoke(npz_bytes(X), "application/x-npz", "application/json")[0])
    assert out["predictions"] == model.predict(dense).tolist()
    np.testing.assert_allclose(out["probabilities"], model.predict_proba(dense), rtol=1e-12)


def test_npz_request_errors(tmp_path, sparse_data, monkeypatch):
    X, y = sparse_data
    service = ModelService.load(_dump(LogisticRegression(max_iter=2000).fit(X, y), tmp_path / "m"))
    err = error_of(service.invoke, npz_bytes(X[:, :59]), "application/x-npz", None)
    assert_clean_error(err, 400)
    assert err.message == "expected 60 features, got 59"
    err = error_of(service.invoke, npz_bytes(X)[:100], "application/x-npz", None)
    assert_clean_error(err, 400)
    assert err.message.startswith("malformed .npz")
    # Densifying is bounded: a dense-only model and a sparse input whose dense copy is past the limit.
    dense_only = ModelService.load(
        _dump(HistGradientBoostingClassifier(max_iter=5).fit(X.toarray(), y), tmp_path / "d")
    )
    monkeypatch.setattr("sklearn_mme.handler.defaults.MAX_EXPANDED_BYTES", X.shape[0] * X.shape[1] * 8 - 1)
    err = error_of(dense_only.invoke, npz_bytes(X), "application/x-npz", None)
    assert_clean_error(err, 400)
    assert "too large to densify" in err.message


# --- request errors through invoke ---


@pytest.mark.parametrize(
    ("body", "content_type", "status", "fragment"),
    [
        (b"1,2,x,4", "text/csv", 400, "not numeric"),
        (b"1,2,3,4\n5,6\n", "text/csv", 400, "row 2"),
        (b'{"instances": [[1,2,3,4]', "application/json", 400, "malformed JSON"),
        (b"", "text/csv", 400, "empty"),
        (b"", "application/json", 400, "empty"),
        (b"1,2,3", "text/csv", 400, "expected 4 features, got 3"),
        (b"[[1,2,3,4,5]]", "application/json", 400, "expected 4 features, got 5"),
        (b"1,nan,3,4", "text/csv", 400, "NaN"),  # LogisticRegression rejects NaN: sklearn's ValueError -> 400
        (b"1,\xff,3,4", "text/csv", 400, "utf-8"),
        (b"[" * 200_000, "application/json", 400, "nested"),
        (b"1,2,3,4", "text/plain", 415, "text/csv"),
        (b"1,2,3,4", "text/csv; charset=klingon", 415, "charset"),
    ],
)
def test_request_errors(services, body, content_type, status, fragment):
    err = error_of(services["iris_logreg"].invoke, body, content_type, None)
    assert_clean_error(err, status)
    assert fragment in err.message


def test_406_is_raised_before_predicting(model_dir):
    service = ModelService.load(model_dir)
    calls = []
    real = service.model
    service.model = type(
        "Spy", (), {"predict": lambda self, X: calls.append(X) or real.predict(X), "n_features_in_": 4}
    )()
    err = error_of(service.invoke, b"1,2,3,4", "text/csv", "text/html")
    assert_clean_error(err, 406)
    assert isinstance(err, NotAcceptable) and "application/json" in err.message and not calls
    service.invoke(b"1,2,3,4", "text/csv", None)
    assert len(calls) == 1


def test_413_payload_limit(set_env, model_dir):
    service = ModelService.load(model_dir)
    body = b"1,2,3,4\n" * (6 * 1024 * 1024 // 8) + b"1"
    err = error_of(service.invoke, body, "text/csv", None)
    assert isinstance(err, PayloadTooLarge)
    assert_clean_error(err, 413)
    set_env(SAGEMAKER_MAX_PAYLOAD_IN_MB="0.001")
    service = ModelService.load(model_dir)
    assert_clean_error(error_of(service.invoke, b"1,2,3,4\n" * 200, "text/csv", None), 413)
    assert service.invoke(b"1,2,3,4\n" * 10, "text/csv", None)


def test_inf_reaches_the_model_and_its_valueerror_is_400(services):
    assert_clean_error(error_of(services["iris_logreg"].invoke, b"1,inf,3,4", "text/csv", None), 400)


# --- loading artifacts ---


def test_model_file_variants(tmp_path, examples):
    model = examples["iris_logreg"].model
    for name in ("model.pkl", "anything.pickle", "other.joblib"):
        d = tmp_path / name.replace(".", "_")
        d.mkdir()
        joblib.dump(model, d / name)
        (d / "notes.txt").write_text("not a model")
        assert ModelService.load(d).invoke(b"1,2,3,4", "text/csv", None)
    d = tmp_path / "preferred"
    d.mkdir()
    joblib.dump(model, d / "model.joblib")
    (d / "extra.pkl").write_bytes(b"not loaded")
    assert ModelService.load(d).model_dir == d


def test_model_load_errors(tmp_path, examples):
    model = examples["iris_logreg"].model
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("x")
    err = error_of(ModelService.load, empty)
    assert isinstance(err, ModelLoadError) and "readme.txt" in err.message and "model.joblib" in err.message
    assert_clean_error(err, 400)

    several = tmp_path / "several"
    several.mkdir()
    joblib.dump(model, several / "a.pkl")
    joblib.dump(model, several / "b.joblib")
    err = error_of(ModelService.load, several)
    assert isinstance(err, ModelLoadError) and "a.pkl" in err.message and "b.joblib" in err.message

    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "model.joblib").write_bytes(b"\x00not a pickle")
    err = error_of(ModelService.load, garbage)
    assert isinstance(err, ModelLoadError) and "model.joblib" in err.message
    assert_clean_error(err, 400)

    no_predict = tmp_path / "no_predict"
    no_predict.mkdir()
    joblib.dump({"weights": [1, 2]}, no_predict / "model.joblib")
    err = error_of(ModelService.load, no_predict)
    assert isinstance(err, ModelLoadError) and "predict" in err.message

    err = error_of(ModelService.load, tmp_path / "missing")
    assert isinstance(err, ModelNotFound)
    assert_clean_error(err, 404)


def test_sha256_sidecar(tmp_path, examples):
    d = write_model_dir(examples["iris_logreg"], tmp_path)
    digest = hashlib.sha256((d / "model.joblib").read_bytes()).hexdigest()
    (d / "model.joblib.sha256").write_text(f"{digest.upper()}  model.joblib\n")
    assert ModelService.load(d).invoke(b"1,2,3,4", "text/csv", None)

    (d / "model.joblib.sha256").write_text("0" * 64 + "\n")
    err = error_of(ModelService.load, d)
    assert isinstance(err, ModelLoadError) and "sha256 mismatch" in err.message
    assert_clean_error(err, 400)

    (d / "model.joblib.sha256").write_text("not-a-digest")
    assert isinstance(error_of(ModelService.load, d), ModelLoadError)


def test_skops_trusted_and_untrusted(tmp_path, examples, set_env):
    X = examples["iris_logreg"].X
    d = tmp_path / "plain"
    d.mkdir()
    skops.io.dump(examples["iris_logreg"].model, d / "model.skops")
    body, _ = ModelService.load(d).invoke(encode_rows(X, "text/csv"), "text/csv", None)
    assert json.loads(body)["predictions"] == examples["iris_logreg"].model.predict(X).tolist()

    # operator.neg is not on skops' default trusted list.
    pipe = make_pipeline(FunctionTransformer(operator.neg), LogisticRegression(max_iter=500))
    pipe.fit(X, examples["iris_logreg"].model.predict(X))
    d = tmp_path / "untrusted"
    d.mkdir()
    skops.io.dump(pipe, d / "model.skops")
    err = error_of(ModelService.load, d)
    assert isinstance(err, ModelLoadError) and "_operator.neg" in err.message
    assert_clean_error(err, 400)

    set_env(MME_SKOPS_TRUSTED_TYPES="something.Else, _operator.neg")
    body, _ = ModelService.load(d).invoke(encode_rows(X, "text/csv"), "text/csv", None)
    assert json.loads(body)["predictions"] == pipe.predict(X).tolist()


# --- code/inference.py ---


def test_user_input_predict_output_fns(model_dir, examples):
    write_code(
        model_dir,
        """
        import json
        import numpy as np

        def input_fn(input_data, content_type):
            assert isinstance(input_data, str), type(input_data)  # text arrives decoded, like the toolkit
            return np.array([[float(v) for v in line.split("|")] for line in input_data.splitlines()])

        def predict_fn(data, model):
            return {"labels": model.predict(data).tolist(), "n": len(data)}

        def output_fn(prediction, accept):
            return json.dumps(prediction), "application/vnd.custom+json"
    """,
    )
    service = ModelService.load(model_dir)
    X = examples["iris_logreg"].X[:3]
    body = "\n".join("|".join(map(repr, row)) for row in X.tolist()).encode()
    out, response_type = service.invoke(body, "text/csv", "application/vnd.custom+json")
    assert response_type == "application/vnd.custom+json"
    assert json.loads(out) == {"labels": examples["iris_logreg"].model.predict(X).tolist(), "n": 3}


def test_user_model_fn_and_default_output_of_user_prediction(tmp_path, examples):
    d = tmp_path / "m"
    d.mkdir()
    joblib.dump(examples["diabetes_ridge"].model, d / "weights.bin")
    write_code(
        d,
        """
        import os
        import joblib

        def model_fn(model_dir):
            return joblib.load(os.path.join(model_dir, "weights.bin"))

        def predict_fn(data, model):
            return model.predict(data) * 0  # a bare ndarray: the default output_fn still encodes it
    """,
    )
    service = ModelService.load(d)
    X = examples["diabetes_ridge"].X[:2]
    for accept in ACCEPTS:
        body, response_type = service.invoke(encode_rows(X, "text/csv"), "text/csv", accept)
        assert response_type == accept
        assert decode_predictions(body, accept, 0) == [0.0, 0.0]


def test_user_transform_fn_replaces_the_others(model_dir):
    write_code(
        model_dir,
        """
        def model_fn(model_dir):  # model_fn is not one of the functions transform_fn replaces
            import joblib
            return joblib.load(f"{model_dir}/model.joblib")

        def transform_fn(model, body, content_type, accept):
            return f"{type(model).__name__}|{body}|{content_type}|{accept}"
    """,
    )
    service = ModelService.load(model_dir)
    out, response_type = service.invoke(b"hello", "application/json", None)
    assert out == b"LogisticRegression|hello|application/json|application/json"
    assert response_type == "application/json"
    out, response_type = service.invoke(b"\x00\x01", "application/octet-stream", "text/plain")
    assert out == b"LogisticRegression|b'\\x00\\x01'|application/octet-stream|text/plain"
    assert response_type == "text/plain"


@pytest.mark.parametrize(
    "others", [("input_fn",), ("predict_fn",), ("output_fn",), ("input_fn", "predict_fn", "output_fn")]
)
def test_user_transform_fn_with_another_function_is_a_load_error(model_dir, others):
    source = "def transform_fn(model, body, content_type, accept):\n    return 'unreachable'\n"
    source += "".join(f"def {name}(*args):\n    return args[0]\n" for name in others)
    write_code(model_dir, source)
    err = error_of(ModelService.load, model_dir)
    assert isinstance(err, ModelLoadError)
    assert_clean_error(err, 400)
    assert err.message == (
        f"code/inference.py defines transform_fn together with {', '.join(others)}: "
        "define either transform_fn or input_fn/predict_fn/output_fn"
    )


def test_sagemaker_program_names_the_script_in_code(set_env, model_dir, examples):
    X = examples["iris_logreg"].X[:3]
    write_code(model_dir, "def output_fn(prediction, accept):\n    return 'from inference.py'\n")
    write_code(
        model_dir,
        """
        from helper import label

        def output_fn(prediction, accept):
            return label(prediction), "text/plain"
        """,
        name="serve.py",
    )
    write_code(
        model_dir, "def label(p):\n    return 'serve.py:' + ','.join(map(str, p['predictions']))\n",
        name="helper.py",
    )
    expected = "serve.py:" + ",".join(str(x) for x in examples["iris_logreg"].model.predict(X).tolist())
    csv = encode_rows(X, "text/csv")
    for program in ("serve.py", "serve"):  # the toolkit takes a script or a module name
        set_env(SAGEMAKER_PROGRAM=program)
        body, response_type = ModelService.load(model_dir).invoke(csv, "text/csv", None)
        assert (body.decode(), response_type) == (expected, "text/plain")
    set_env(SAGEMAKER_PROGRAM="absent.py")  # no such script: the defaults, as with no code/inference.py
    body, _ = ModelService.load(model_dir).invoke(csv, "text/csv", None)
    assert json.loads(body)["predictions"] == examples["iris_logreg"].model.predict(X).tolist()


def test_sagemaker_program_the_default_is_inference_py(model_dir):
    write_code(model_dir, "def output_fn(prediction, accept):\n    return 'from inference.py'\n")
    write_code(model_dir, "def output_fn(prediction, accept):\n    return 'from serve.py'\n", name="serve.py")
    assert ModelService.load(model_dir).invoke(b"1,2,3,4", "text/csv", None)[0] == b"from inference.py"


@pytest.mark.parametrize("program", ["code/serve.py", "../serve.py"])
def test_sagemaker_program_path_fails_the_load_cleanly(set_env, model_dir, program):
    set_env(SAGEMAKER_PROGRAM=program)
    err = error_of(ModelService.load, model_dir)
    assert_clean_error(err, 500)
    assert "SAGEMAKER_PROGRAM" in err.message


def test_sagemaker_program_import_error_names_the_script(set_env, model_dir):
    write_code(model_dir, "import no_such_module_here\n", name="serve.py")
    set_env(SAGEMAKER_PROGRAM="serve.py")
    err = error_of(ModelService.load, model_dir)
    assert_clean_error(err, 400)
    assert err.message.startswith("code/serve.py failed to import: ModuleNotFoundError")


def test_user_code_helper_modules_do_not_leak_between_models(tmp_path, examples):
    dirs = []
    for tag in ("first", "second"):
        d = write_model_dir(examples["iris_logreg"], tmp_path, name=tag)
        write_code(d, f"TAG = {tag!r}\n", name="helper.py")
        write_code(
            d,
            """
            import helper

            def output_fn(prediction, accept):
                return helper.TAG
        """,
        )
        dirs.append(d)
    path_before = list(sys.path)
    first, second = ModelService.load(dirs[0]), ModelService.load(dirs[1])
    assert first.invoke(b"1,2,3,4", None, None)[0] == b"first"
    assert second.invoke(b"1,2,3,4", None, None)[0] == b"second"
    assert sys.path == path_before
    assert "helper" not in sys.modules
    assert not [m for m in sys.modules if m.startswith("mme_user_inference")]
    # Reloading (after an eviction) re-imports this model's own code.
    assert ModelService.load(dirs[0]).invoke(b"1,2,3,4", None, None)[0] == b"first"


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("def predict_fn(data, model)\n    return 1\n", "SyntaxError"),
        ("import no_such_module_xyz\n", "ModuleNotFoundError"),
        ("raise RuntimeError('boom at import')\n", "boom at import"),
        ("import sys\nsys.exit(3)\n", "SystemExit"),
    ],
)
def test_user_code_import_errors(model_dir, source, fragment):
    write_code(model_dir, source)
    err = error_of(ModelService.load, model_dir)
    assert isinstance(err, ModelLoadError)
    assert err.message.startswith("code/inference.py failed to import:") and fragment in err.message
    assert_clean_error(err, 400)


def test_user_model_fn_failure_is_model_load_error(model_dir):
    write_code(model_dir, "def model_fn(model_dir):\n    raise ValueError('corrupt weights')\n")
    err = error_of(ModelService.load, model_dir)
    assert isinstance(err, ModelLoadError) and "corrupt weights" in err.message
    assert_clean_error(err, 400)


def test_user_code_runtime_error_is_500(model_dir):
    write_code(
        model_dir,
        """
        def predict_fn(data, model):
            raise KeyError("missing column")
    """,
    )
    err = error_of(ModelService.load(model_dir).invoke, b"1,2,3,4", "text/csv", None)
    assert isinstance(err, UserCodeError) and "predict_fn" in err.message and "KeyError" in err.message
    assert_clean_error(err, 500)


def test_user_raised_inference_error_keeps_its_status(model_dir):
    write_code(
        model_dir,
        """
        from sklearn_mme.handler.errors import BadRequest, InferenceError

        def input_fn(input_data, content_type):
            if input_data.startswith("teapot"):
                raise InferenceError("short and stout", status=418)
            raise BadRequest("feature 'age' must be positive")
    """,
    )
    service = ModelService.load(model_dir)
    err = error_of(service.invoke, b"1,2,3,4", "text/csv", None)
    assert isinstance(err, BadRequest) and err.message == "feature 'age' must be positive"
    assert error_of(service.invoke, b"teapot", "text/csv", None).status == 418


def test_user_raised_toolkit_error_keeps_its_status(model_dir):
    write_code(
        model_dir,
        """
        from sagemaker_inference.errors import GenericInferenceToolkitError

        def input_fn(input_data, content_type):
            raise GenericInferenceToolkitError(422, "unprocessable row")
        """,
    )
    err = error_of(ModelService.load(model_dir).invoke, b"1,2,3,4", "text/csv", None)
    assert_clean_error(err, 422)
    assert err.message == "unprocessable row"


def test_user_output_of_wrong_type_is_500(model_dir):
    write_code(model_dir, "def output_fn(prediction, accept):\n    return {'not': 'bytes'}\n")
    assert_clean_error(error_of(ModelService.load(model_dir).invoke, b"1,2,3,4", "text/csv", None), 500)


def test_model_predict_crash_is_500_not_400(model_dir):
    service = ModelService.load(model_dir)

    class Broken:
        n_features_in_ = 4

        def predict(self, X):
            raise ZeroDivisionError("bug in the model")

    service.model = Broken()
    err = error_of(service.invoke, b"1,2,3,4", "text/csv", None)
    assert_clean_error(err, 500)
    assert "ZeroDivisionError" in err.message


# --- fuzzing: hostile input only ever yields 4xx InferenceErrors ---

CONTENT_TYPES = st.sampled_from(
    [
        "text/csv",
        "application/json",
        "application/jsonlines",
        "application/x-npy",
        "application/x-npz",
        "text/csv; header=present",
        "application/json; charset=latin-1",
        "text/csv; charset=utf-16",
        None,
        "image/png",
    ]
)
ACCEPT_HEADERS = st.sampled_from(
    [
        None,
        "*/*",
        "text/csv",
        "application/x-npy",
        "application/jsonlines",
        "text/*;q=0.3, application/json",
        "text/html",
        "a/b;q=x, */*;q=0.1",
    ]
)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.sampled_from(["instances", "inputs", "features", "x"]), children, max_size=3)
    ),
    max_leaves=30,
)


def _assert_only_4xx(service: ModelService, body: bytes, content_type, accept) -> None:
    try:
        service.invoke(body, content_type, accept)
    except InferenceError as err:
        assert 400 <= err.status < 500, (err.status, err.message)
        assert "\n" not in err.message and "Traceback" not in err.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=300), content_type=CONTENT_TYPES, accept=ACCEPT_HEADERS)
def test_fuzz_random_bytes(services, body, content_type, accept):
    _assert_only_4xx(services["iris_logreg"], body, content_type, accept)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=JSON_VALUES, as_lines=st.booleans(), accept=ACCEPT_HEADERS)
def test_fuzz_random_json(services, doc, as_lines, accept):
    body = json.dumps(doc).encode()
    content_type = "application/jsonlines" if as_lines else "application/json"
    _assert_only_4xx(services["iris_logreg"], body, content_type, accept)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(
        st.lists(st.floats() | st.integers(-(10**30), 10**30), min_size=1, max_size=6), min_size=1, max_size=4
    ),
    content_type=st.sampled_from(["text/csv", "application/json", "application/x-npy"]),
    accept=ACCEPT_HEADERS,
)
def test_fuzz_numeric_rows(services, rows, content_type, accept):
    if content_type == "text/csv":
        body = "\n".join(",".join(map(repr, row)) for row in rows).encode()
    elif content_type == "application/json":
        body = json.dumps(rows).encode()
    else:
        width = min(len(r) for r in rows)
        buf = io.BytesIO()
        np.save(buf, np.array([[float(v) for v in r[:width]] for r in rows]))
        body = buf.getvalue()
    for kind in ("iris_logreg", "diabetes_ridge", "iris_kmeans"):
        _assert_only_4xx(services[kind], body, content_type, accept)
