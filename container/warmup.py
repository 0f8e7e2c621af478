"""What the zygote does once before it forks anything: import and warm all a worker and a typical model need.

Every worker forked afterwards inherits these pages instead of importing numpy, scipy and scikit-learn again
(~92 MB and ~1.1 s per model in a fresh interpreter).
"""

from __future__ import annotations

import importlib
import os
import tempfile
from pathlib import Path

from sklearn_mme.container.settings import Wiring


def preload(handler: str) -> None:
    """Import and warm everything a worker and a typical model need, before any fork."""
    # One BLAS thread per process: many small models on few cores; also makes forking safe.
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    import multiprocessing  # noqa: F401

    import mms.model_loader
    import mms.service  # noqa: F401
    import scipy.sparse  # noqa: F401
    import sklearn.cluster
    import sklearn.compose
    import sklearn.decomposition
    import sklearn.ensemble
    import sklearn.impute
    import sklearn.linear_model
    import sklearn.naive_bayes
    import sklearn.neighbors
    import sklearn.pipeline
    import sklearn.preprocessing
    import sklearn.svm
    import sklearn.tree  # noqa: F401

    import sklearn_mme.container.backend  # noqa: F401

    # XGBoost and LightGBM when installed (the handler imports them lazily, only for models that need them):
    # imported here, their pages are shared by every forked worker instead of being loaded per model.
    for optional in ("xgboost", "lightgbm"):
        try:
            importlib.import_module(optional)
        except (ImportError, OSError):  # not installed, or lightgbm without the system's libgomp
            pass
    # The configured MMS handler module (ours by default); a path-style handler is imported per model.
    module = handler.split(":", 1)[0]
    if "/" not in module:
        importlib.import_module(module)
    warm_up()


def warm_up() -> None:
    """Run one real load and one predict per codec, so lazy imports and caches are filled pre-fork."""
    from sklearn_mme.container import examples
    from sklearn_mme.handler.service import ModelService

    # Our MMS plugin's start-up loads (Warmup.java) load the same model from where serve asks for it.
    keep = Wiring.from_env().warmup_model
    with tempfile.TemporaryDirectory(prefix="mme-warm-") as tmp:
        where = Path(keep) if keep else Path(tmp) / "warm"
        model_dir = examples.write_model_dir(examples.small_model(0), where.parent, where.name)
        service = ModelService.load(model_dir)
        for ctype, body in (("text/csv", b"5.1,3.5,1.4,0.2"), ("application/json", b"[[5.1,3.5,1.4,0.2]]"),
                            ("application/jsonlines", b"[5.1,3.5,1.4,0.2]")):
            for accept in ("application/json", "text/csv", "application/jsonlines", "application/x-npy"):
                service.invoke(body, ctype, accept)
