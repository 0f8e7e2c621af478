"""XGBoost and LightGBM models trained on scikit-learn's bundled datasets, written as users ship them."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import joblib
import lightgbm
import numpy as np
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class BoosterCase:
    name: str
    model_dir: Path
    X: np.ndarray
    predictions: list  # what the JSON answer's "predictions" must be, computed in-process
    probabilities: list | None
    csv: bytes  # the text/csv answer expected


def _csv_rows(values: list) -> bytes:
    return "".join(f"{v!r}\n" for v in values).encode()


def write_booster_models(root: Path) -> dict[str, BoosterCase]:
    Xc, yc = load_breast_cancer(return_X_y=True)
    Xr, yr = load_diabetes(return_X_y=True)
    Xc_s, Xr_s = Xc[::50], Xr[::60]
    cases: dict[str, BoosterCase] = {}

    def add(name: str, X: np.ndarray, preds: list, probs: list | None, csv: bytes) -> Path:
        d = root / name
        d.mkdir(parents=True)
        cases[name] = BoosterCase(name, d, X, preds, probs, csv)
        return d

    pipe = make_pipeline(StandardScaler(), xgboost.XGBClassifier(n_estimators=20, max_depth=3)).fit(Xc, yc)
    preds, probs = pipe.predict(Xc_s).tolist(), pipe.predict_proba(Xc_s).tolist()
    csv = "".join(f"{p},{a!r},{b!r}\n" for p, (a, b) in zip(preds, probs, strict=True)).encode()
    joblib.dump(pipe, add("xgb_pipeline", Xc_s, preds, probs, csv) / "model.joblib")

    reg = lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(Xr, yr)
    preds = reg.predict(Xr_s).tolist()
    joblib.dump(reg, add("lgbm_regressor", Xr_s, preds, None, _csv_rows(preds)) / "model.joblib")

    params = {"objective": "binary:logistic", "max_depth": 3}
    booster = xgboost.train(params, xgboost.DMatrix(Xc, label=yc), 20)
    raw = booster.predict(xgboost.DMatrix(Xc_s))
    # SageMaker's XGBoost container: ",".join(map(str, prediction.tolist())), one line.
    xgb_csv = ",".join(map(str, raw.tolist())).encode()
    for fmt in ("json", "ubj"):
        d = add(f"xgb_native_{fmt}", Xc_s, raw.tolist(), None, xgb_csv)
        (d / "xgboost-model").write_bytes(bytes(booster.save_raw(fmt)))

    lgb = lightgbm.train({"objective": "regression", "verbose": -1}, lightgbm.Dataset(Xr, label=yr), 20)
    preds = lgb.predict(Xr_s).tolist()
    lgb.save_model(str(add("lgb_native_txt", Xr_s, preds, None, _csv_rows(preds)) / "model.txt"))
    lgb.save_model(str(add("lgb_native_lgb", Xr_s, preds, None, _csv_rows(preds)) / "regressor.lgb"))
    return cases


def csv_body(X: np.ndarray) -> str:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in X)


def json_body(X: np.ndarray) -> str:
    return json.dumps({"instances": X.tolist()})
