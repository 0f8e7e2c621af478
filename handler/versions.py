"""Library versions: what wrote an artifact against what is installed, and the manifest `mme-local package`
writes beside the model.

Where the versions come from: scikit-learn's own InconsistentVersionWarning while unpickling (its estimators
record `_sklearn_version`), the "version" of an XGBoost JSON/UBJSON model, and `mme-manifest.json`
({"model_file", "sha256", "libraries": {name: version}}). A mismatch is logged and counted, and with
MME_VERSION_SKEW=refuse fails the load with a 400 naming both versions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from sklearn_mme.handler.boosters import NativeBooster, estimators, top_module
from sklearn_mme.handler.errors import ModelLoadError

logger = logging.getLogger(__name__)

# Not "manifest.json": MMS 1.1.11 takes any file of that name, in any case, for its own legacy manifest
# and fails the load with a NullPointerException.
MANIFEST = "mme-manifest.json"
# library name (as in the manifest) -> top-level module, and the distributions that may provide it.
LIBRARIES = {
    "scikit-learn": ("sklearn", ("scikit-learn",)),
    "xgboost": ("xgboost", ("xgboost", "xgboost-cpu")),
    "lightgbm": ("lightgbm", ("lightgbm",)),
}
_MAX_MANIFEST_BYTES = 64 * 1024

# Loads that found a skew, per library: the hook a metrics exporter reads (skew_counts()).
_SKEW_LOADS: Counter[str] = Counter()


@dataclass(frozen=True)
class Skew:
    library: str
    written: str  # the version the artifact was written with
    installed: str

    def __str__(self) -> str:
        return f"{self.library} {self.written} wrote the model, {self.installed} is installed"


def skew_counts() -> dict[str, int]:
    """Loads with a version skew so far in this process, per library."""
    return dict(_SKEW_LOADS)


def installed_version(library: str) -> str | None:
    for dist in LIBRARIES[library][1]:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def libraries_used(model: object) -> set[str]:
    """The libraries of LIBRARIES whose classes the loaded model is made of."""
    modules = {top_module(est) for est in estimators(model)}
    if isinstance(model, NativeBooster):
        modules.add(model.library)
    return {name for name, (module, _) in LIBRARIES.items() if module in modules}


@contextmanager
def pickled_sklearn_versions() -> Iterator[set[str]]:
    """Collects the scikit-learn versions that pickles loaded inside the block were written with (from
    scikit-learn's InconsistentVersionWarning; the warning itself is kept out of the logs: we log once)."""
    from sklearn.exceptions import InconsistentVersionWarning

    found: set[str] = set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InconsistentVersionWarning)
        yield found
    for w in caught:
        if isinstance(w.message, InconsistentVersionWarning):
            found.add(str(w.message.original_sklearn_version))
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


# --- the manifest ---

def sha256_of(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def make_manifest(model_file: Path) -> dict:
    """What `mme-local package` writes as mme-manifest.json: the model file's name and sha256, and the
    versions of scikit-learn, XGBoost and LightGBM installed where it runs (those installed; the container
    compares only the ones the loaded model is made of)."""
    libraries = {name: v for name in LIBRARIES if (v := installed_version(name)) is not None}
    return {"model_file": model_file.name, "sha256": sha256_of(model_file), "libraries": libraries}


def read_manifest(model_dir: Path) -> dict | None:
    """mme-manifest.json of `model_dir`, its model file's sha256 verified; None without one. Malformed or a
    digest mismatch -> ModelLoadError (400), before the model file is loaded."""
    path = model_dir / MANIFEST
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > _MAX_MANIFEST_BYTES:
            raise ValueError("it is too large")
        manifest = json.loads(path.read_bytes())
        name, digest = manifest["model_file"], manifest["sha256"]
        libraries = manifest.get("libraries", {})
        if not (isinstance(name, str) and isinstance(digest, str) and isinstance(libraries, dict)
                and all(isinstance(v, str) for v in libraries.values())):
            raise ValueError("a field has the wrong type")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelLoadError(f"{MANIFEST} is malformed: {exc}") from None
    model_file = model_dir / name
    if "/" in name or not model_file.is_file():
        raise ModelLoadError(f"{MANIFEST} names {name!r}, which is not a file in the model directory")
    actual = sha256_of(model_file)
    if not hmac.compare_digest(actual, digest.lower()):
        raise ModelLoadError(f"sha256 mismatch for {name} ({MANIFEST}): expected {digest}, got {actual}")
    return manifest


def find_skews(model: object, manifest: dict | None, pickled_sklearn: set[str]) -> list[Skew]:
    """Every library the model uses whose recorded version differs from the installed one."""
    used = libraries_used(model)
    written: dict[str, str] = {}
    for library, version in ((manifest or {}).get("libraries") or {}).items():
        if library in used:
            written[library] = version
    if pickled_sklearn:
        written["scikit-learn"] = ", ".join(sorted(pickled_sklearn))
    if isinstance(model, NativeBooster) and model.written_by:
        written.setdefault(model.library, model.written_by)
    skews = []
    for library, version in sorted(written.items()):
        installed = installed_version(library)
        if installed is not None and version != installed:
            skews.append(Skew(library, version, installed))
    return skews


def enforce(skews: list[Skew], policy: str, where: str) -> None:
    """Log and count each skew; under `refuse` raise a 400 naming both versions."""
    if not skews:
        return
    text = "; ".join(map(str, skews))
    for skew in skews:
        _SKEW_LOADS[skew.library] += 1
    if policy == "refuse":
        raise ModelLoadError(f"version skew: {text} (MME_VERSION_SKEW=refuse)")
    logger.warning("version skew in %s: %s (MME_VERSION_SKEW=warn: loaded anyway)", where, text)
