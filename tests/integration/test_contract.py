"""The SageMaker MME contract, against a real `container/serve` (MMS + zygote backends)."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from sklearn_mme.container.examples import Example
from tests.support import Serve

pytestmark = pytest.mark.mms


def _csv(X: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in X)


def _assert_short_error(resp, status: int) -> dict:
    assert resp.status_code == status, resp.text
    assert "Traceback" not in resp.text and 'File "' not in resp.text
    body = resp.json()
    assert "\n" not in body["message"] and len(body["message"]) < 400
    return body


def _listed(serve: Serve) -> set[str]:
    names, token = set(), None
    while True:
        params = {"limit": 2, **({"next_page_token": token} if token else {})}
        page = serve.http.get(f"{serve.url}/models", params=params, timeout=10).json()
        names |= {m["modelName"] for m in page["models"]}
        token = page.get("nextPageToken")
        if not token:
            return names


@pytest.fixture(scope="module")
def loaded(serve: Serve, model_root, trained) -> dict[str, Example]:
    for name in ("iris_logreg", "diabetes_ridge", "wine_pipeline", "iris_kmeans", "iris_custom"):
        resp = serve.load(name, model_root / name)
        assert resp.status_code == 200, resp.text
    return trained


def test_ping(serve: Serve) -> None:
    assert serve.http.get(f"{serve.url}/ping", timeout=2).status_code == 200


@pytest.mark.parametrize("name", ["iris_logreg", "diabetes_ridge", "wine_pipeline", "iris_kmeans"])
@pytest.mark.parametrize("content_type", ["text/csv", "text/csv; charset=utf-8", "application/json",
                                          "application/jsonlines", "application/x-npy"])
def test_predictions_equal_in_process(serve: Serve, loaded, name: str, content_type: str) -> None:
    ex = loaded[name]
    if content_type.startswith("text/csv"):
        body: bytes | str = _csv(ex.X)
    elif content_type == "application/json":
        body = json.dumps({"instances": ex.X.tolist()})
    elif content_type == "application/jsonlines":
        body = "\n".join(json.dumps(row) for row in ex.X.tolist())
    else:
        buf = io.BytesIO()
        np.save(buf, ex.X)
        body = buf.getvalue()
    resp = serve.invoke(name, body, content_type, accept="application/json")
    assert resp.status_code == 200, resp.text
    out = resp.json()
    np.testing.assert_allclose(out["predictions"], ex.model.predict(ex.X), rtol=1e-9)
    if hasattr(ex.model, "predict_proba"):
        np.testing.assert_allclose(out["probabilities"], ex.model.predict_proba(ex.X), rtol=1e-9)


@pytest.mark.parametrize("accept", ["application/json", "text/csv", "application/jsonlines",
                                    "application/x-npy", "text/html;q=0.9, text/csv", "*/*"])
def test_each_accept(serve: Serve, loaded, accept: str) -> None:
    ex = loaded["diabetes_ridge"]
    resp = serve.invoke("diabetes_ridge", _csv(ex.X), "text/csv", accept=accept)
    assert resp.status_code == 200, resp.text
    expected = ex.model.predict(ex.X)
    ctype = resp.headers["Content-Type"]
    if ctype.startswith("application/jsonlines"):
        got = [json.loads(line)["prediction"] for line in resp.text.strip().splitlines()]
    elif ctype.startswith("application/json"):
        got = resp.json()["predictions"]
    elif ctype.startswith("text/csv"):
        got = [float(line.split(",")[0]) for line in resp.text.strip().splitlines()]
    else:
        assert ctype.startswith("application/x-npy")
        got = np.load(io.BytesIO(resp.content), allow_pickle=False)
    np.testing.assert_allclose(np.asarray(got, dtype=float), expected, rtol=1e-9)
    if accept == "text/html;q=0.9, text/csv":
        assert ctype.startswith("text/csv")


def test_user_code_overrides_output(serve: Serve, loaded) -> None:
    ex = loaded["iris_logreg"]
    resp = serve.invoke("iris_custom", _csv(ex.X), "text/csv")
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"custom": [int(p) for p in ex.model.predict(ex.X)]}


@pytest.mark.parametrize(("body", "content_type", "accept", "status"), [
    ("1,2,3,4\n5,6", "text/csv", None, 400),              # ragged CSV
    ("a,b,c,d", "text/csv", None, 400),                   # not numbers
    ('{"instances": [[1,2,3,4]', "application/json", None, 400),  # malformed JSON
    ("", "text/csv", None, 400),                          # empty body
    ("1,2,3", "text/csv", None, 400),                     # wrong number of features
    ("1,2,3,4", "application/x-yaml", None, 415),
    ("1,2,3,4", "text/csv", "image/png", 406),
])
def test_client_errors_are_short_json(serve: Serve, loaded, body, content_type, accept, status) -> None:
    _assert_short_error(serve.invoke("iris_logreg", body, content_type, accept=accept), status)


def test_payload_too_large(serve: Serve, loaded) -> None:
    resp = serve.invoke("iris_logreg", b"1" * (7 * 1024 * 1024), "text/csv")
    assert resp.status_code == 413
    assert "Traceback" not in resp.text


def test_user_code_exception_is_500_without_detail(serve: Serve, loaded) -> None:
    body = _assert_short_error(serve.invoke("iris_custom", "-1,2,3,4", "text/csv"), 500)
    assert "secret internal detail" not in json.dumps(body) or "Traceback" not in json.dumps(body)
    # ...and nothing already loaded is affected
    ok = serve.invoke("iris_logreg", "5.1,3.5,1.4,0.2", "text/csv")
    assert ok.status_code == 200


def test_load_conflict_and_missing_path(serve: Serve, loaded, model_root) -> None:
    assert serve.load("iris_logreg", model_root / "iris_logreg").status_code == 409
    assert serve.load("nowhere", model_root / "does-not-exist").status_code == 404
    assert "nowhere" not in _listed(serve)


@pytest.mark.parametrize(("dirname", "status"), [("no_model_file", 400), ("broken_code", 400)])
def test_failed_load_answers_error_and_is_not_listed(
    serve: Serve, loaded, model_root, dirname, status
) -> None:
    name = f"failing-{dirname}"
    resp = serve.load(name, model_root / dirname)
    # already unregistered at the moment of the answer (SageMaker retries at once): no polling
    assert name not in _listed(serve)
    assert serve.invoke(name, "1,2,3,4").status_code == 404
    assert resp.status_code == status, resp.text
    assert "Traceback" not in resp.text
    assert resp.json()["message"] != "Failed to start workers", resp.text  # the backend's own reason
    # the same name loads fine once the artifact is right
    assert serve.load(name, model_root / "iris_logreg").status_code == 200
    assert serve.invoke(name, "5.1,3.5,1.4,0.2").status_code == 200
    assert serve.unload(name).status_code == 200


def test_list_is_paged_and_describe(serve: Serve, loaded) -> None:
    page = serve.http.get(f"{serve.url}/models", params={"limit": 2}, timeout=10).json()
    assert len(page["models"]) == 2 and page["nextPageToken"]
    assert {"iris_logreg", "diabetes_ridge", "wine_pipeline", "iris_kmeans"} <= _listed(serve)
    desc = serve.http.get(f"{serve.url}/models/iris_logreg", timeout=10)
    assert desc.status_code == 200 and desc.json()["modelName"] == "iris_logreg"


def test_delete_then_404(serve: Serve, model_root, trained) -> None:
    assert serve.load("to_delete", model_root / "iris_logreg").status_code == 200
    assert serve.invoke("to_delete", "5.1,3.5,1.4,0.2").status_code == 200
    assert serve.unload("to_delete").status_code == 200
    assert serve.invoke("to_delete", "5.1,3.5,1.4,0.2").status_code == 404
    assert serve.http.get(f"{serve.url}/models/to_delete", timeout=10).status_code == 404
    assert serve.unload("to_delete").status_code == 404


def test_opaque_model_names(serve: Serve, model_root, trained) -> None:
    name = "3f2a9c1b7e8d4f60a1b2c3d4e5f60718"  # SageMaker sends a hash
    assert serve.load(name, model_root / "iris_logreg").status_code == 200
    assert serve.invoke(name, "5.1,3.5,1.4,0.2").status_code == 200
    assert serve.unload(name).status_code == 200
