"""Fixtures for the reliability and security tests (issue 6): trained example models, their directories,
fake AWS settings for boto3. Helpers that start servers live in `tests/reliability/util.py`.

Everything listens on 127.0.0.1; boto3 gets fake credentials and an endpoint_url, never real AWS.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sklearn_mme.container import examples


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, trained: dict[str, examples.Example]) -> Path:
    """One directory per example model (model.joblib only)."""
    root = tmp_path_factory.mktemp("models")
    for example in trained.values():
        examples.write_model_dir(example, root)
    return root
