"""Fixtures every test package shares."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from sklearn_mme.container import examples
from tests.support import FAKE_AWS


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


@pytest.fixture(autouse=True, scope="session")
def _short_warm_up() -> Iterator[None]:
    """A few start-up warm-up loads (MME_WARMUP_LOADS) instead of the default 100: the suite starts the
    container a few hundred times, and the default's ~1.7 s each would add minutes. What the warm-up does
    (its /ping gate, that nothing of it is left) is tested at the default in test_warmup.py, and the image
    tests run the default."""
    saved = os.environ.get("MME_WARMUP_LOADS")
    os.environ.setdefault("MME_WARMUP_LOADS", "8")
    yield
    if saved is None:
        os.environ.pop("MME_WARMUP_LOADS", None)


@pytest.fixture(scope="session")
def trained() -> dict[str, examples.Example]:
    """The example models, trained once per session (scikit-learn's bundled datasets)."""
    return examples.train_all()
