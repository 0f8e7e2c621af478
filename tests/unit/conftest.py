"""Shared fixtures: example models trained once per session, written to per-test model dirs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sklearn_mme.container.examples import Example, train_all, write_model_dir
from sklearn_mme.handler.errors import InferenceError, error_body
from sklearn_mme.handler.settings import get_settings


@pytest.fixture(scope="session")
def examples() -> dict[str, Example]:
    return train_all()


@pytest.fixture(autouse=True)
def fresh_settings():
    """Settings are cached per process; tests that monkeypatch the env need a fresh read."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def set_env(monkeypatch):
    def _set(**env: str) -> None:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        get_settings.cache_clear()

    return _set


@pytest.fixture
def model_dir(tmp_path, examples) -> Path:
    """The iris classifier (4 features, has predict_proba) as model.joblib."""
    return write_model_dir(examples["iris_logreg"], tmp_path)


def assert_clean_error(err: InferenceError, status: int) -> None:
    """The contract for every error: the right status, a one-line message without a traceback."""
    assert err.status == status, (err.status, err.message)
    assert err.message and "\n" not in err.message and "Traceback" not in err.message
    assert len(err.message) <= 300
    body = json.loads(error_body(err.status, err.message))
    assert body["code"] == status and body["message"] == err.message
