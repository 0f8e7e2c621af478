"""predict_fn reads the predictions off predict_proba for classifiers where scikit-learn's predict is that
argmax; the answer must be exactly model.predict's, including where rounding makes a tie."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.ensemble import ExtraTreesClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier, ExtraTreeClassifier

from sklearn_mme.handler import defaults

MODELS = {
    "logreg-binary": lambda: LogisticRegression(max_iter=500),
    "logreg-multiclass": lambda: LogisticRegression(max_iter=500),
    "tree": lambda: DecisionTreeClassifier(max_depth=4, random_state=0),
    "extra-tree": lambda: ExtraTreeClassifier(max_depth=4, random_state=0),
    "forest": lambda: RandomForestClassifier(n_estimators=7, max_depth=3, random_state=0),
    "extra-trees": lambda: ExtraTreesClassifier(n_estimators=7, max_depth=3, random_state=0),
    "pipeline": lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_predictions_match_predict_on_random_rows(name: str) -> None:
    n_classes = 2 if name == "logreg-binary" else 4
    X, y = make_classification(n_samples=300, n_features=6, n_informative=4, n_classes=n_classes,
                               random_state=1)
    y = np.array(["cat", "dog", "eel", "fox"])[y]  # string classes: take() must keep them
    model = MODELS[name]().fit(X, y)
    rng = np.random.default_rng(2)
    # Rows near and far from the training data, and exact training rows (trees: pure leaves, ties likely).
    rows = np.vstack([X[:50], rng.normal(size=(200, 6)) * 3, rng.normal(size=(50, 6)) * 1e-9])
    for batch in np.array_split(rows, 30):
        got = defaults.predict_fn(batch, model)
        assert got["predictions"] == model.predict(batch).tolist()
        assert got["probabilities"] == model.predict_proba(batch).tolist()


def test_a_tie_falls_back_to_predict() -> None:
    """expit of a tiny positive score is exactly 0.5: probabilities [0.5, 0.5], argmax class 0, but
    predict (score > 0) says class 1."""
    model = LogisticRegression().fit([[0.0], [1.0]], [0, 1])
    model.coef_ = np.zeros_like(model.coef_)
    model.intercept_ = np.array([1e-20])
    row = np.array([[0.3]])
    assert model.predict_proba(row).tolist() == [[0.5, 0.5]]
    assert model.predict(row).tolist() == [1]
    assert defaults.predict_fn(row, model)["predictions"] == [1]


def test_other_classifiers_still_call_predict() -> None:
    X, y = make_classification(n_samples=120, n_features=4, random_state=3)
    model = KNeighborsClassifier(n_neighbors=4).fit(X, y)  # not in the list: predict is its own vote
    assert defaults._predictions_from(model.predict_proba(X), model) is None
    assert defaults.predict_fn(X, model)["predictions"] == model.predict(X).tolist()
