"""Stores of small models that each answer their own number, so a request answered by the wrong model (or
routed to the wrong place) shows as a wrong answer; and a multi-instance endpoint running in-process."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import joblib
import numpy as np
from sklearn.dummy import DummyRegressor

from sklearn_mme.container.ports import free_port
from sklearn_mme.harness.app import HarnessConfig
from sklearn_mme.harness.endpoint import Endpoint
from sklearn_mme.harness.packaging import package

BODY = b"5.1,3.5,1.4,0.2"


def key(i: int) -> str:
    return f"m{i:03d}.tar.gz"


def numbered_store(root: Path, count: int) -> Path:
    """`root/store` holding m000.tar.gz ... : model i predicts i for any 4 features."""
    store = root / "store"
    X = np.zeros((2, 4))
    for i in range(count):
        model_dir = root / "src" / f"m{i:03d}"
        model_dir.mkdir(parents=True)
        joblib.dump(DummyRegressor(strategy="constant", constant=float(i)).fit(X, [0.0, 0.0]),
                    model_dir / "model.joblib")
        package(model_dir, store / key(i))
    return store


def answer_of(body: bytes) -> float:
    return float(json.loads(body)["predictions"][0])


@contextmanager
def running_endpoint(
    store: Path, instances: int, hot_rate: float = 20.0, **config: object
) -> Iterator[Endpoint]:
    cfg = HarnessConfig(model_store=str(store), port=free_port(), **config)  # type: ignore[arg-type]
    endpoint = Endpoint(cfg, instances, hot_rate)
    endpoint.start()
    try:
        yield endpoint
    finally:
        endpoint.stop()
