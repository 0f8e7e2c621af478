"""Example models trained on scikit-learn's bundled datasets (no network needed).

Used by the demo, the tests and the benchmark, so every part speaks about the same models.
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass
from pathlib import Path

import joblib
import numpy as np
from sklearn.cluster import KMeans
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class Example:
    """A trained model and a few rows it can be asked about."""

    name: str
    model: object
    X: np.ndarray  # sample rows, float64, shape (n, n_features)

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def _iris() -> Example:
    X, y = load_iris(return_X_y=True)
    return Example("iris_logreg", LogisticRegression(max_iter=500).fit(X, y), X[::15])


def _diabetes() -> Example:
    X, y = load_diabetes(return_X_y=True)
    return Example("diabetes_ridge", Ridge(alpha=1.0).fit(X, y), X[::40])


def _wine_pipeline() -> Example:
    X, y = load_wine(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    return Example("wine_pipeline", pipe, X[::20])


def _cancer_pipeline() -> Example:
    X, y = load_breast_cancer(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X, y)
    return Example("cancer_pipeline", pipe, X[::60])


def _iris_kmeans() -> Example:
    X, _ = load_iris(return_X_y=True)
    return Example("iris_kmeans", KMeans(n_clusters=3, n_init=3, random_state=0).fit(X), X[::25])


BUILDERS = {
    "iris_logreg": _iris,
    "diabetes_ridge": _diabetes,
    "wine_pipeline": _wine_pipeline,
    "cancer_pipeline": _cancer_pipeline,
    "iris_kmeans": _iris_kmeans,
}


def train(name: str) -> Example:
    """Train one named example model."""
    return BUILDERS[name]()


def train_all() -> dict[str, Example]:
    return {name: build() for name, build in BUILDERS.items()}


def small_model(seed: int) -> Example:
    """A distinct small LogisticRegression per seed: the 'one model per customer' case."""
    X, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(X), size=len(X), replace=True)
    return Example(f"customer_{seed:04d}", LogisticRegression(max_iter=500).fit(X[idx], y[idx]), X[::15])


def write_model_dir(example: Example, root: Path, name: str | None = None) -> Path:
    """Write `root/<name>/model.joblib` and return the model directory."""
    model_dir = Path(root) / (name or example.name)
    model_dir.mkdir(parents=True, exist_ok=True)
    joblib.dump(example.model, model_dir / "model.joblib")
    return model_dir


def package_dir(model_dir: Path, archive: Path) -> Path:
    """Pack a model directory as SageMaker expects: its contents at the archive root."""
    archive = Path(archive)
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for child in sorted(Path(model_dir).iterdir()):
            tar.add(child, arcname=child.name)
    return archive
