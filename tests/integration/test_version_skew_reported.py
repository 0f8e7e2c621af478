"""Version skew as the container reports it (issue 17): in GET /models/{name}, in /metrics, and a refused
load's cause; and XGBoost's legacy binary format answered with a 400 that says how to convert it. Against
real MMS processes (`container/serve`), with a pickle really written by another scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import requests
import sklearn
import xgboost

from tests.integration.test_container_metrics import models_of, scrape, value
from tests.support import Serve, running_serve
from tests.unit.booster_models import csv_body
from tests.unit.old_sklearn import OLD_SKLEARN, old_sklearn_model

pytestmark = pytest.mark.mms

TARGET = "X-Amzn-SageMaker-Target-Model"
SKEW = "mme_container_model_version_skew"
LEGACY = Path(__file__).resolve().parent.parent / "fixtures" / "xgboost_legacy_binary"  # see its README


@pytest.fixture(scope="module")
def old_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    model_dir = tmp_path_factory.mktemp("old") / "old_sklearn"
    return model_dir, old_sklearn_model(model_dir)


def describe(serve: Serve, name: str) -> requests.Response:
    return requests.get(f"{serve.url}/models/{name}", timeout=10)


def test_skew_is_shown_per_model_and_counted(tmp_path: Path, old_model: tuple[Path, dict],
                                             model_root: Path) -> None:
    model_dir, made = old_model
    expected = {"library": "scikit-learn", "written": OLD_SKLEARN, "installed": sklearn.__version__}
    with running_serve(tmp_path) as serve:  # MME_VERSION_SKEW=warn: loaded, logged, shown, counted
        opaque = "5d41402abc4b2a76b9719d911017c592"
        assert serve.load(opaque, model_dir).status_code == 200
        assert serve.load("current", model_root / "iris_logreg").status_code == 200
        resp = serve.invoke(opaque, csv_body(np.array(made["X"])), accept="application/json",
                            **{TARGET: "old.tar.gz"})
        assert resp.status_code == 200 and resp.json()["predictions"] == made["predictions"]

        old = describe(serve, opaque).json()  # MMS's description, with what the worker found at load
        assert old["modelName"] == opaque and old["workers"]
        assert old["versionSkew"] == [expected]
        current = describe(serve, "current").json()
        assert current["versionSkew"] == []

        s = scrape(serve)
        assert value(s, SKEW, model="old.tar.gz", library="scikit-learn", written=OLD_SKLEARN,
                     installed=sklearn.__version__) == 1
        assert models_of(s, SKEW) == {"old.tar.gz"}  # the current model has no series

        assert serve.unload(opaque).status_code == 200
        assert describe(serve, opaque).status_code == 404
        assert models_of(scrape(serve), SKEW) == set()  # a gauge of loaded models: gone with the model


def test_refused_skew_is_its_own_load_failure_cause(tmp_path: Path, old_model: tuple[Path, dict],
                                                     model_root: Path) -> None:
    model_dir, _ = old_model
    with running_serve(tmp_path, MME_VERSION_SKEW="refuse") as strict:
        resp = strict.load("old", model_dir)
        assert resp.status_code == 400
        assert (f"version skew: scikit-learn {OLD_SKLEARN} wrote the model, {sklearn.__version__} is "
                "installed") in resp.json()["message"]
        assert describe(strict, "old").status_code == 404  # not left registered
        assert strict.load("empty", model_root / "no_model_file").status_code == 400  # another 400
        s = scrape(strict)
        failures = "mme_container_model_load_failures_total"
        assert value(s, failures, model="old", cause="version_skew") == 1
        assert value(s, failures, model="old", cause="bad_artifact") is None
        assert value(s, failures, model="empty", cause="bad_artifact") == 1
        assert models_of(s, SKEW) == set()


def test_legacy_binary_xgboost_model_is_a_400_saying_how_to_convert(tmp_path: Path, model_root: Path) -> None:
    assert (LEGACY / "xgboost-model").read_bytes()[:4] == b"binf"  # XGBoost 1.x-2.x's binary header
    with running_serve(tmp_path) as serve:
        assert serve.load("keep", model_root / "iris_logreg").status_code == 200
        resp = serve.load("legacy", LEGACY)
        assert resp.status_code == 400
        message = resp.json()["message"]
        assert "\n" not in message and "Traceback" not in message
        assert message.startswith(f"xgboost-model is in XGBoost's legacy binary format, which XGBoost "
                                  f"{xgboost.__version__} cannot read")
        assert "save_model('xgboost-model.ubj')" in message
        assert describe(serve, "legacy").status_code == 404
        assert serve.invoke("keep", "5.1,3.5,1.4,0.2").status_code == 200  # nothing loaded is lost
