"""Fixtures that run the real container (`container/serve`, real MMS) with real example models."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from sklearn_mme.container import examples
from tests.support import running_serve


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory, trained: dict[str, examples.Example]) -> Path:
    root = tmp_path_factory.mktemp("models")
    for example in trained.values():
        examples.write_model_dir(example, root)
    # A model whose own code/inference.py overrides output_fn and raises in predict_fn on demand.
    custom = examples.write_model_dir(trained["iris_logreg"], root, "iris_custom")
    (custom / "code").mkdir()
    (custom / "code" / "inference.py").write_text(textwrap.dedent("""
        import json
        import numpy as np

        def predict_fn(data, model):
            if np.any(data < 0):
                raise RuntimeError("secret internal detail")
            return model.predict(data)

        def output_fn(prediction, accept):
            return json.dumps({"custom": [int(p) for p in prediction]}), "application/json"
    """))
    empty = root / "no_model_file"
    empty.mkdir()
    broken = examples.write_model_dir(trained["iris_logreg"], root, "broken_code")
    (broken / "code").mkdir()
    (broken / "code" / "inference.py").write_text("def model_fn(model_dir):\n    return undefined_name\n")
    return root


@pytest.fixture(scope="module", params=["zygote", "zygote-python-launcher", "hosts", "vanilla"])
def serve(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """The container with each backend: a worker forked per model from the pre-warmed zygote (with the
    compiled launcher and with its Python fallback), shared host processes (the default), and a fresh
    interpreter per model (MMS's way)."""
    env = {"MME_BACKEND": request.param.split("-")[0]}
    if request.param == "zygote-python-launcher":
        env["MME_LAUNCHER"] = "python"
    elif request.param == "zygote":
        env["MME_LAUNCHER"] = "c"  # fails loudly if the build step did not produce it
    with running_serve(tmp_path_factory.mktemp("serve"), **env) as server:
        yield server
