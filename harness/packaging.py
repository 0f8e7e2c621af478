"""Packaging a model as SageMaker expects it: a tar.gz, `model.joblib` (or another model file the container
recognises) at the root, `mme-manifest.json` beside it and optional `code/`."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

from sklearn_mme.handler.boosters import is_native
from sklearn_mme.handler.errors import InferenceError
from sklearn_mme.handler.model_loader import MODEL_SUFFIXES, PREFERRED_FILES, find_model_file
from sklearn_mme.handler.versions import MANIFEST, make_manifest

MODEL_FILE = "model.joblib"
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".git"}


class PackagingError(ValueError):
    """The source cannot be packaged as a model; the message says why."""


def _members(source: Path) -> list[tuple[Path, str]]:
    """(file on disk, name in the archive) pairs, sorted, for a model file or directory."""
    if source.is_file():
        if not (source.name.endswith(MODEL_SUFFIXES) or source.name in PREFERRED_FILES):
            known = ", ".join(PREFERRED_FILES + MODEL_SUFFIXES)
            raise PackagingError(f"{source} is not a model file ({known})")
        # A lone file keeps its format: model.skops must stay skops (the container loads it safely), a
        # native XGBoost/LightGBM model keeps its name.
        if source.name.endswith(".skops"):
            return [(source, "model.skops")]
        return [(source, source.name if is_native(source) else MODEL_FILE)]
    if not source.is_dir():
        raise PackagingError(f"no such model file or directory: {source}")
    try:
        find_model_file(source)
    except InferenceError as exc:
        raise PackagingError(f"{source}: {exc.message}") from None
    out = []
    for dirpath, dirnames, filenames in os.walk(source):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_symlink():
                # The harness (like a careful SageMaker user) refuses links when extracting; fail early.
                raise PackagingError(f"symlinks cannot be packaged: {path}")
            if name.endswith(".pyc"):
                continue
            out.append((path, path.relative_to(source).as_posix()))
    return out


def default_key(source: Path) -> str:
    """The store key (TargetModel) for a model file or directory: its name without a model or archive
    suffix, plus `.tar.gz` (`m.skops` -> `m.tar.gz`)."""
    name = source.name
    for suffix in (".tar.gz", ".tgz", *MODEL_SUFFIXES):
        if name.endswith(suffix):
            return f"{name[: -len(suffix)]}.tar.gz"
    return f"{name}.tar.gz"


def _manifest(source: Path, members: list[tuple[Path, str]]) -> bytes | None:
    """mme-manifest.json for the model file the container will load (its sha256, the library versions here),
    unless the source has its own."""
    if any(arcname == MANIFEST for _, arcname in members):
        return None
    model_file = source if source.is_file() else find_model_file(source)
    entry = make_manifest(model_file)
    entry["model_file"] = next(arcname for path, arcname in members if path == model_file)
    return (json.dumps(entry, indent=2, sort_keys=True) + "\n").encode("utf-8")


def package(source: str | os.PathLike[str], archive: str | os.PathLike[str]) -> Path:
    """Write `archive` (tar.gz) from a model file or directory, with a mme-manifest.json beside the model
    (see handler/versions.py); reproducible (fixed mtimes and owners)."""
    source, archive = Path(source), Path(archive)
    members = _members(source)
    manifest = _manifest(source, members)
    archive.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path, arcname in members:
            info = tarfile.TarInfo(arcname)
            info.size = path.stat().st_size
            info.mode = 0o644
            info.mtime = 0
            with open(path, "rb") as fh:
                tar.addfile(info, fh)
        if manifest is not None:
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode, info.mtime = len(manifest), 0o644, 0
            tar.addfile(info, io.BytesIO(manifest))
    tmp = archive.with_name(archive.name + ".part")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    os.replace(tmp, archive)
    return archive
