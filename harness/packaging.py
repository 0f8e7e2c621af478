"""Packaging a model as SageMaker expects it: a tar.gz, `model.joblib` at the root and optional `code/`."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path

from sklearn_mme.handler.model_loader import MODEL_SUFFIXES  # what the container loads: one list

MODEL_FILE = "model.joblib"
_SKIP_DIRS = {"__pycache__", ".ipynb_checkpoints", ".git"}


class PackagingError(ValueError):
    """The source cannot be packaged as a model; the message says why."""


def _members(source: Path) -> list[tuple[Path, str]]:
    """(file on disk, name in the archive) pairs, sorted, for a model file or directory."""
    if source.is_file():
        if not source.name.endswith(MODEL_SUFFIXES):
            raise PackagingError(f"{source} is not a model file ({', '.join(MODEL_SUFFIXES)})")
        # A lone file keeps its format: model.skops must stay skops (the container loads it safely).
        return [(source, "model.skops" if source.name.endswith(".skops") else MODEL_FILE)]
    if not source.is_dir():
        raise PackagingError(f"no such model file or directory: {source}")
    top = [p for p in source.iterdir() if p.is_file() and p.name.endswith(MODEL_SUFFIXES)]
    if not (source / MODEL_FILE).is_file() and len(top) != 1:
        raise PackagingError(
            f"{source} has no {MODEL_FILE} (nor exactly one *.joblib/*.pkl/*.pickle/*.skops file)"
        )
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


def package(source: str | os.PathLike[str], archive: str | os.PathLike[str]) -> Path:
    """Write `archive` (tar.gz) from a model file or directory; reproducible (fixed mtimes and owners)."""
    source, archive = Path(source), Path(archive)
    members = _members(source)
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
    tmp = archive.with_name(archive.name + ".part")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    os.replace(tmp, archive)
    return archive
