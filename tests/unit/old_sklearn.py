"""A model pickled by another scikit-learn release, made for real in a cached venv (not a patched field)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

OLD_SKLEARN = "1.8.0"
_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sklearn-mme"
_TRAIN = """
import json, sys, joblib, sklearn
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
X, y = load_iris(return_X_y=True)
model = LogisticRegression(max_iter=500).fit(X, y)
joblib.dump(model, sys.argv[1])
print(json.dumps({"version": sklearn.__version__, "X": X[::15].tolist(),
                  "predictions": model.predict(X[::15]).tolist()}))
"""


def old_sklearn_model(model_dir: Path) -> dict:
    """Write model_dir/model.joblib from scikit-learn OLD_SKLEARN (pip-installed once into a cached venv);
    returns {"version", "X", "predictions"} as computed there. Skips the test if the venv cannot be made."""
    venv = _CACHE / f"venv-scikit-learn-{OLD_SKLEARN}"
    python = venv / "bin" / "python"
    if not (venv / ".complete").exists():
        try:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True,
                           capture_output=True, timeout=120)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"scikit-learn=={OLD_SKLEARN}"],
                           check=True, capture_output=True, timeout=600)
        except (subprocess.SubprocessError, OSError) as exc:
            pytest.skip(f"cannot install scikit-learn {OLD_SKLEARN} into a test venv: {exc}")
        (venv / ".complete").touch()
    model_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run([str(python), "-c", _TRAIN, str(model_dir / "model.joblib")], check=True,
                          capture_output=True, text=True, timeout=120)
    result = json.loads(done.stdout)
    assert result["version"] == OLD_SKLEARN
    return result
