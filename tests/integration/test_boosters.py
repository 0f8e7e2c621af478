"""XGBoost/LightGBM artifacts and version skew through the real container (`container/serve`, real MMS)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import sklearn

from tests.support import Serve, running_serve
from tests.unit.booster_models import BoosterCase, csv_body, json_body, write_booster_models
from tests.unit.old_sklearn import OLD_SKLEARN, old_sklearn_model

pytestmark = pytest.mark.mms


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BoosterCase]:
    return write_booster_models(tmp_path_factory.mktemp("boosters"))


@pytest.fixture(scope="module")
def old_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    model_dir = tmp_path_factory.mktemp("old") / "old_sklearn"
    return model_dir, old_sklearn_model(model_dir)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory):
    with running_serve(tmp_path_factory.mktemp("serve")) as server:  # the zygote, MME_VERSION_SKEW=warn
        yield server


def _npy(X: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, X)
    return buf.getvalue()


@pytest.mark.parametrize("name", ["xgb_pipeline", "lgbm_regressor", "xgb_native_json", "xgb_native_ubj",
                                  "lgb_native_txt", "lgb_native_lgb"])
def test_served_predictions_equal_in_process(serve: Serve, cases: dict[str, BoosterCase], name: str) -> None:
    case = cases[name]
    assert serve.load(name, case.model_dir).status_code == 200
    for body, ctype in ((csv_body(case.X), "text/csv"), (json_body(case.X), "application/json"),
                        (_npy(case.X), "application/x-npy")):
        resp = serve.invoke(name, body, ctype, accept="application/json")
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == case.predictions, ctype
        assert resp.json().get("probabilities") == case.probabilities, ctype
        resp = serve.invoke(name, body, ctype, accept="text/csv")
        assert resp.status_code == 200 and resp.content == case.csv, (ctype, resp.content[:200])
        resp = serve.invoke(name, body, ctype, accept="application/x-npy")
        assert np.load(io.BytesIO(resp.content)).tolist() == pytest.approx(case.predictions), ctype
    assert serve.unload(name).status_code == 200


def test_skewed_pickle_loads_with_a_warning(serve: Serve, old_model: tuple[Path, dict]) -> None:
    model_dir, made = old_model
    assert serve.load("old_sklearn", model_dir).status_code == 200
    resp = serve.invoke("old_sklearn", csv_body(np.array(made["X"])), accept="application/json")
    assert resp.status_code == 200 and resp.json()["predictions"] == made["predictions"]
    assert f"scikit-learn {OLD_SKLEARN} wrote the model, {sklearn.__version__} is installed" in serve.log()
    assert serve.unload("old_sklearn").status_code == 200


def test_strict_mode_refuses_a_skewed_pickle(tmp_path: Path, old_model: tuple[Path, dict],
                                             cases: dict[str, BoosterCase]) -> None:
    model_dir, _ = old_model
    with running_serve(tmp_path, MME_VERSION_SKEW="refuse") as strict:
        resp = strict.load("old_sklearn", model_dir)
        assert resp.status_code == 400, resp.text
        assert "Traceback" not in resp.text
        # MMS 1.1.11 answers a failed load with its own words; serve logs ours (mme-local reads it back).
        assert (f"version skew: scikit-learn {OLD_SKLEARN} wrote the model, {sklearn.__version__} "
                "is installed (MME_VERSION_SKEW=refuse)") in strict.log()
        assert strict.load("pipe", cases["xgb_pipeline"].model_dir).status_code == 200  # no skew: loads
        assert json.loads(strict.invoke("pipe", csv_body(cases["xgb_pipeline"].X)).content)["predictions"] \
            == cases["xgb_pipeline"].predictions
