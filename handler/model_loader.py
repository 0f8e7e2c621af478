"""Finding, verifying and loading a model artifact; importing the script in its code/ (SAGEMAKER_PROGRAM)."""

from __future__ import annotations

import hashlib
import hmac
import importlib.util
import itertools
import logging
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

from sklearn_mme.handler.boosters import (
    LIGHTGBM_MODEL,
    LIGHTGBM_SUFFIX,
    XGBOOST_MODEL,
    is_native,
    load_native,
    pin_threads,
)
from sklearn_mme.handler.errors import (
    InferenceError,
    InsufficientMemory,
    ModelLoadError,
    ModelNotFound,
    one_line,
)

logger = logging.getLogger(__name__)

# Looked for in this order; then the single file with one of MODEL_SUFFIXES. `xgboost-model` is the name
# SageMaker's XGBoost container writes; `model.txt` and `*.lgb` are LightGBM's text models (boosters.py).
PREFERRED_FILES = ("model.joblib", "model.skops", XGBOOST_MODEL, LIGHTGBM_MODEL)
MODEL_SUFFIXES = (".joblib", ".pkl", ".pickle", ".skops", LIGHTGBM_SUFFIX)
_HEX_SHA256 = re.compile(r"[0-9a-f]{64}")


def _describe(exc: BaseException) -> str:
    return one_line(f"{type(exc).__name__}: {exc}", 200)


def find_model_file(model_dir: Path) -> Path:
    """The first of PREFERRED_FILES in model_dir, else its single file with one of MODEL_SUFFIXES."""
    if not model_dir.is_dir():
        raise ModelNotFound(f"model directory {model_dir.name!r} does not exist")
    for name in PREFERRED_FILES:
        if (model_dir / name).is_file():
            return model_dir / name
    candidates = sorted(p for p in model_dir.iterdir() if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        names = ", ".join(p.name for p in candidates[:10])
        raise ModelLoadError(f"several model files found ({names}); keep one, or name it model.joblib")
    preferred = ", ".join(PREFERRED_FILES)
    suffixes = ", ".join("*" + s for s in MODEL_SUFFIXES)
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in model_dir.iterdir())
    listing = ", ".join(found[:10]) + (", ..." if len(found) > 10 else "") if found else "nothing"
    raise ModelLoadError(
        f"no model file: expected one of {preferred} or a single {suffixes} file; found {listing}"
    )


def verify_sha256(model_file: Path) -> None:
    """If `<model_file>.sha256` exists (sha256sum format), the file must match it."""
    sidecar = model_file.with_name(model_file.name + ".sha256")
    if not sidecar.is_file():
        return
    tokens = sidecar.read_text(encoding="utf-8", errors="replace").split()
    expected = tokens[0].lower() if tokens else ""
    if not _HEX_SHA256.fullmatch(expected):
        raise ModelLoadError(f"{sidecar.name} does not hold a sha256 hex digest")
    with open(model_file, "rb") as f:
        actual = hashlib.file_digest(f, "sha256").hexdigest()
    if not hmac.compare_digest(actual, expected):
        raise ModelLoadError(f"sha256 mismatch for {model_file.name}: expected {expected}, got {actual}")


def load_model_file(model_file: Path, trusted_types: Iterable[str] = ()) -> object:
    """joblib.load, skops.io.load refusing types outside skops' defaults plus `trusted_types`, or a native
    XGBoost/LightGBM model (boosters.py); XGBoost/LightGBM estimators inside are set to one thread."""
    try:
        if model_file.suffix.lower() == ".skops":
            return pin_threads(_load_skops(model_file, set(trusted_types)))
        if is_native(model_file):
            return load_native(model_file)
        import joblib

        return pin_threads(joblib.load(model_file))
    except InferenceError:
        raise
    except MemoryError:
        raise InsufficientMemory(f"not enough memory to load {model_file.name}") from None
    except Exception as exc:
        logger.warning("loading %s failed", model_file, exc_info=exc)
        raise ModelLoadError(f"could not load {model_file.name}: {_describe(exc)}") from None


def _load_skops(model_file: Path, trusted: set[str]) -> object:
    import skops.io

    untrusted = skops.io.get_untrusted_types(file=model_file)
    refused = sorted(t for t in untrusted if t not in trusted)
    if refused:
        raise ModelLoadError(
            f"{model_file.name} contains untrusted types: {', '.join(refused)} "
            f"(add them to MME_SKOPS_TRUSTED_TYPES to allow them)"
        )
    return skops.io.load(model_file, trusted=untrusted)


# --- code/inference.py (or SAGEMAKER_PROGRAM) ---

# sys.path and sys.modules are process-global: one model's code is imported at a time.
_import_lock = threading.RLock()
_module_ids = itertools.count()


class UserCode:
    """A model's code/inference.py (or what SAGEMAKER_PROGRAM names), imported under a unique module name.

    Helper modules it imports from code/ are kept here, not in sys.modules, so two models each with their own
    `helper.py` never see each other's. `scope()` puts code/ on sys.path and this model's helpers back into
    sys.modules, for the import and for model_fn (unpickling may need the helpers' classes).
    """

    def __init__(self, code_dir: Path) -> None:
        self.code_dir = Path(os.path.realpath(code_dir))
        self.module: ModuleType | None = None
        self.program = "inference.py"  # the script's file name in code/, for messages
        self._modules: dict[str, ModuleType] = {}

    @classmethod
    def load(cls, model_dir: Path, program: str = "inference.py") -> UserCode | None:
        """Import model_dir/code/<program> (SAGEMAKER_PROGRAM; a file name) if present; errors ->
        ModelLoadError."""
        path = model_dir / "code" / program
        if not path.is_file():
            return None
        code = cls(path.parent)
        name = f"mme_user_inference_{next(_module_ids)}"
        try:
            with code.scope():
                spec = importlib.util.spec_from_file_location(name, code.code_dir / program)
                if spec is None or spec.loader is None:
                    raise ImportError(f"no loader for {program}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module  # some code (dataclasses, typing) looks itself up while executing
                spec.loader.exec_module(module)
        except MemoryError:
            raise InsufficientMemory(f"not enough memory to import code/{program}") from None
        except (Exception, SystemExit) as exc:
            logger.warning("importing %s failed", path, exc_info=exc)
            raise ModelLoadError(f"code/{program} failed to import: {_describe(exc)}") from None
        code.module = module
        code.program = program
        return code

    def function(self, name: str) -> object | None:
        fn = getattr(self.module, name, None)
        return fn if callable(fn) else None

    def _owns(self, module: ModuleType) -> bool:
        files = [getattr(module, "__file__", None), *list(getattr(module, "__path__", None) or [])]
        prefix = str(self.code_dir) + os.sep
        return any(isinstance(f, str) and os.path.abspath(f).startswith(prefix) for f in files)

    @contextmanager
    def scope(self) -> Iterator[None]:
        with _import_lock:
            shadowed = {name: sys.modules.get(name) for name in self._modules}
            sys.modules.update(self._modules)
            before = set(sys.modules)
            sys.path.insert(0, str(self.code_dir))
            try:
                yield
            finally:
                try:
                    sys.path.remove(str(self.code_dir))
                except ValueError:
                    pass
                for name in (set(sys.modules) - before) | set(self._modules):
                    module = sys.modules.get(name)
                    if module is not None and self._owns(module):
                        self._modules[name] = sys.modules.pop(name)
                for name, module in shadowed.items():
                    if module is not None:
                        sys.modules[name] = module
