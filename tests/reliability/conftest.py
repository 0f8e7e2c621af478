"""Fixtures for the reliability and security tests (issue 6): trained example models, their directories,
fake AWS settings for boto3. Helpers that start servers live in `tests/reliability/util.py`.

Everything listens on 127.0.0.1; boto3 gets fake credentials and an endpoint_url, never real AWS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from container import examples

FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/nonexistent",
    "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
}


@pytest.fixture(autouse=True, scope="session")
def _fake_aws_env() -> Iterator[None]:
    """No test may reach real AWS: fake credentials for every boto3 client made here or in subprocesses."""
    saved = {k: os.environ.get(k) for k in FAKE_AWS}
    os.environ.update(FAKE_AWS)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
def trained() -> dict[str, examples.Example]:
    return examples.train_all()


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, trained: dict[str, examples.Example]) -> Path:
    """One directory per example model (model.joblib only)."""
    root = tmp_path_factory.mktemp("models")
    for example in trained.values():
        examples.write_model_dir(example, root)
    return root
