"""XGBoost/LightGBM models and library-version checks, loaded and invoked in-process through ModelService."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import sklearn
import xgboost

from sklearn_mme.handler import boosters, versions
from sklearn_mme.handler.boosters import NativeBooster, estimators
from sklearn_mme.handler.errors import InferenceError, ModelLoadError
from sklearn_mme.handler.model_loader import find_model_file
from sklearn_mme.handler.service import ModelService
from sklearn_mme.harness.packaging import package
from tests.unit.booster_models import BoosterCase, csv_body, json_body, write_booster_models
from tests.unit.conftest import assert_clean_error
from tests.unit.old_sklearn import OLD_SKLEARN, old_sklearn_model


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BoosterCase]:
    return write_booster_models(tmp_path_factory.mktemp("boosters"))


@pytest.mark.parametrize("name", ["xgb_pipeline", "lgbm_regressor", "xgb_native_json", "xgb_native_ubj",
                                  "lgb_native_txt", "lgb_native_lgb"])
def test_loads_and_answers_like_in_process(cases: dict[str, BoosterCase], name: str) -> None:
    case = cases[name]
    service = ModelService.load(case.model_dir)
    assert service.version_skew == []
    npy = io.BytesIO()
    np.save(npy, case.X)
    for body, ctype in ((csv_body(case.X), "text/csv"), (json_body(case.X), "application/json"),
                        (npy.getvalue(), "application/x-npy")):
        answer, _ = service.invoke(body, ctype, "application/json")
        decoded = json.loads(answer)
        assert decoded["predictions"] == case.predictions, ctype
        assert decoded.get("probabilities") == case.probabilities, ctype
        assert service.invoke(body, ctype, "text/csv") == (case.csv, "text/csv")
        array, _ = service.invoke(body, ctype, "application/x-npy")
        assert np.load(io.BytesIO(array)).tolist() == pytest.approx(case.predictions), ctype


def test_estimators_and_boosters_get_one_thread(cases: dict[str, BoosterCase]) -> None:
    pipe = ModelService.load(cases["xgb_pipeline"].model_dir).model
    assert [e.n_jobs for e in estimators(pipe) if isinstance(e, xgboost.XGBClassifier)] == [1]
    assert ModelService.load(cases["lgbm_regressor"].model_dir).model.n_jobs == 1
    native = ModelService.load(cases["xgb_native_json"].model_dir).model
    assert isinstance(native, NativeBooster)
    assert json.loads(native.booster.save_config())["learner"]["generic_param"]["nthread"] == "1"


def test_native_model_checks_the_row_width(cases: dict[str, BoosterCase]) -> None:
    service = ModelService.load(cases["xgb_native_json"].model_dir)
    with pytest.raises(InferenceError) as err:
        service.invoke(csv_body(cases["xgb_native_json"].X[:, :-1]), "text/csv", "text/csv")
    assert_clean_error(err.value, 400)
    assert "expected 30 features, got 29" in err.value.message


def test_lookup_order(tmp_path: Path, cases: dict[str, BoosterCase]) -> None:
    shutil.copytree(cases["xgb_native_json"].model_dir, tmp_path, dirs_exist_ok=True)
    shutil.copy(cases["lgb_native_txt"].model_dir / "model.txt", tmp_path)
    assert find_model_file(tmp_path).name == "xgboost-model"  # before model.txt
    shutil.copy(cases["xgb_pipeline"].model_dir / "model.joblib", tmp_path)
    assert find_model_file(tmp_path).name == "model.joblib"  # before both


def test_xgboost_version_is_read_from_json_and_ubjson(cases: dict[str, BoosterCase]) -> None:
    for name in ("xgb_native_json", "xgb_native_ubj"):
        raw = (cases[name].model_dir / "xgboost-model").read_bytes()
        assert boosters.xgboost_file_version(raw) == xgboost.__version__


def test_xgboost_json_written_by_another_version_is_a_skew(tmp_path: Path, set_env,
                                                           cases: dict[str, BoosterCase]) -> None:
    # The recorded field is all XGBoost's loader reads from it; an older file differs in it (and more).
    model = json.loads((cases["xgb_native_json"].model_dir / "xgboost-model").read_bytes())
    model["version"] = [2, 1, 4]
    (tmp_path / "xgboost-model").write_text(json.dumps(model))
    before = versions.skew_counts().get("xgboost", 0)
    service = ModelService.load(tmp_path)
    assert [str(s) for s in service.version_skew] == [
        f"xgboost 2.1.4 wrote the model, {xgboost.__version__} is installed"]
    assert versions.skew_counts()["xgboost"] == before + 1
    set_env(MME_VERSION_SKEW="refuse")
    with pytest.raises(ModelLoadError) as err:
        ModelService.load(tmp_path)
    assert_clean_error(err.value, 400)
    assert "2.1.4" in err.value.message and xgboost.__version__ in err.value.message


def test_pickle_from_another_sklearn_is_logged_counted_and_refusable(tmp_path: Path, set_env, caplog) -> None:
    made = old_sklearn_model(tmp_path / "old")
    before = versions.skew_counts().get("scikit-learn", 0)
    with caplog.at_level("WARNING", logger="sklearn_mme.handler.versions"):
        service = ModelService.load(tmp_path / "old")
    assert [(s.library, s.written, s.installed) for s in service.version_skew] == [
        ("scikit-learn", OLD_SKLEARN, sklearn.__version__)]
    assert versions.skew_counts()["scikit-learn"] == before + 1
    assert f"scikit-learn {OLD_SKLEARN} wrote the model, {sklearn.__version__} is installed" in caplog.text
    answer, _ = service.invoke(csv_body(np.array(made["X"])), "text/csv", "application/json")
    assert json.loads(answer)["predictions"] == made["predictions"]
    set_env(MME_VERSION_SKEW="refuse")
    with pytest.raises(ModelLoadError) as err:
        ModelService.load(tmp_path / "old")
    assert_clean_error(err.value, 400)
    assert OLD_SKLEARN in err.value.message and sklearn.__version__ in err.value.message


def _unpack(archive: Path, into: Path) -> Path:
    import tarfile

    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into


def test_package_manifest_is_checked(tmp_path: Path, set_env, cases: dict[str, BoosterCase]) -> None:
    model_dir = _unpack(package(cases["xgb_pipeline"].model_dir, tmp_path / "m.tar.gz"), tmp_path / "m")
    manifest = json.loads((model_dir / "mme-manifest.json").read_text())
    assert manifest["model_file"] == "model.joblib"
    assert manifest["libraries"]["scikit-learn"] == sklearn.__version__
    assert manifest["libraries"]["xgboost"] == xgboost.__version__
    assert ModelService.load(model_dir).version_skew == []

    # The same manifest from an environment with another XGBoost: a skew, refused when strict.
    manifest["libraries"]["xgboost"] = "2.1.4"
    (model_dir / "mme-manifest.json").write_text(json.dumps(manifest))
    assert [s.library for s in ModelService.load(model_dir).version_skew] == ["xgboost"]
    set_env(MME_VERSION_SKEW="refuse")
    with pytest.raises(ModelLoadError, match="xgboost 2.1.4 wrote the model"):
        ModelService.load(model_dir)
    # LightGBM is recorded but the model does not use it: never a skew.
    manifest["libraries"] = {"lightgbm": "3.0.0", "scikit-learn": sklearn.__version__}
    (model_dir / "mme-manifest.json").write_text(json.dumps(manifest))
    assert ModelService.load(model_dir).version_skew == []

    # A changed model file is a 400 before it is unpickled.
    (model_dir / "model.joblib").write_bytes(b"not the packaged model")
    with pytest.raises(ModelLoadError) as err:
        ModelService.load(model_dir)
    assert_clean_error(err.value, 400)
    assert "sha256 mismatch for model.joblib (mme-manifest.json)" in err.value.message


@pytest.mark.parametrize("text", ['{"model_file": 3}', "[]", "{", '{"model_file": "../x", "sha256": "ab"}'])
def test_malformed_manifest_is_a_400(model_dir: Path, text: str) -> None:
    (model_dir / "mme-manifest.json").write_text(text)
    with pytest.raises(ModelLoadError) as err:
        ModelService.load(model_dir)
    assert_clean_error(err.value, 400)
    assert "mme-manifest.json" in err.value.message
