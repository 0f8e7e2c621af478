"""The N small models both servers load: same artifacts, each laid out the way its server expects."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from sklearn_mme.container.examples import small_model, write_model_dir

# The seed-style user script a customer ships for the stock toolkit (the vanilla reference only).
INFERENCE_PY = '''\
import json
import os

import joblib
import numpy as np


def model_fn(model_dir):
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def input_fn(input_data, content_type):
    if isinstance(input_data, (bytes, bytearray)):
        input_data = input_data.decode("utf-8")
    return np.loadtxt(input_data.splitlines(), delimiter=",", ndmin=2)


def predict_fn(data, model):
    return model.predict(data)


def output_fn(prediction, accept):
    return json.dumps({"predictions": prediction.tolist()})
'''


@dataclass(frozen=True)
class BenchModel:
    """One customer's model: where each server finds it, a request body, and the right answer."""

    name: str
    ours_dir: Path  # model.joblib only: our container's default handler path
    vanilla_dir: Path  # the same model.joblib plus code/inference.py, as the stock toolkit needs
    body: bytes  # text/csv rows
    expected: tuple[int, ...]  # predictions computed in-process


def to_csv(rows: object) -> bytes:
    # repr keeps every float exact, so the server sees the same numbers as the local predict.
    return "\n".join(",".join(repr(float(v)) for v in row) for row in rows).encode()  # type: ignore[attr-defined]


def make_models(root: Path, n: int, with_vanilla: bool = True, progress: bool = True) -> list[BenchModel]:
    """Train and write `n` distinct small models under `root` (ours/ and vanilla/ trees)."""
    ours_root, vanilla_root = root / "ours", root / "vanilla"
    models = []
    for seed in tqdm(range(n), desc="training models", unit="model", disable=not progress, leave=False):
        # One BLAS thread: on a busy machine the default pool made each tiny fit take ~1.7 s instead of 0.12.
        with threadpool_limits(1):
            example = small_model(seed)
        name = f"customer_{seed:04d}"
        ours_dir = write_model_dir(example, ours_root, name)
        vanilla_dir = vanilla_root / name
        if with_vanilla:
            (vanilla_dir / "code").mkdir(parents=True, exist_ok=True)
            shutil.copy2(ours_dir / "model.joblib", vanilla_dir / "model.joblib")
            (vanilla_dir / "code" / "inference.py").write_text(INFERENCE_PY)
        expected = tuple(int(p) for p in example.model.predict(example.X))
        models.append(BenchModel(name, ours_dir, vanilla_dir, to_csv(example.X), expected))
    return models


def big_forest(seed: int = 0, rows: int = 9000) -> tuple[object, np.ndarray]:
    """The 'one big model' of issue 13: a 60-tree RandomForest (~13 MB joblib) and some rows to ask."""
    from sklearn.ensemble import RandomForestClassifier

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 10))
    y = (X[:, 0] + rng.normal(size=rows) > 0).astype(int)
    return RandomForestClassifier(n_estimators=60, random_state=seed, n_jobs=1).fit(X, y), X[:20]


def big_xgboost(seed: int = 0, rows: int = 2000) -> tuple[object, np.ndarray]:
    """A 100-tree XGBoost classifier (issue 17's warm-latency row) and some rows to ask."""
    import xgboost

    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, 10))
    y = (X[:, 0] + rng.normal(size=rows) > 0).astype(int)
    return xgboost.XGBClassifier(n_estimators=100, max_depth=6, n_jobs=1).fit(X, y), X[:20]
