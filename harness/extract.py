"""Safe extraction of model archives.

Artifacts come from a store anyone with write access can fill, and the container loads code from them, so an
archive must never write outside its target directory. Every member is checked before anything is written
(links of any kind, absolute paths, `..`, devices and FIFOs are refused; model archives never need them),
tarfile's `data` filter runs as a second line of defence, and the declared sizes and member count are bounded
so a decompression bomb stops before it fills the disk. Extraction goes into a temporary sibling directory
that is renamed into place, so a half-written model directory is never visible.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import tarfile
import tempfile
from pathlib import Path

DEFAULT_MAX_BYTES = 4 * 1024**3
DEFAULT_MAX_MEMBERS = 10_000


# OSErrors that say something about this machine (its disk, its limits), not about the archive.
HOST_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EMFILE, errno.ENFILE, errno.ENOMEM}
)


class UnsafeArchiveError(ValueError):
    """The archive is malformed or tries something a model archive must not do; the message says what."""


def check_member(member: tarfile.TarInfo) -> None:
    """Raise UnsafeArchiveError when one member is not a plain file or directory inside the archive root."""
    name = member.name
    if member.issym() or member.islnk():
        kind = "symlink" if member.issym() else "hardlink"
        raise UnsafeArchiveError(f"{kind} not allowed in a model archive: {name!r} -> {member.linkname!r}")
    if member.ischr() or member.isblk() or member.isfifo():
        raise UnsafeArchiveError(f"device or FIFO not allowed in a model archive: {name!r}")
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchiveError(f"unsupported member type in a model archive: {name!r}")
    if not name or "\x00" in name:
        raise UnsafeArchiveError(f"empty or invalid member name: {name!r}")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchiveError(f"absolute path not allowed in a model archive: {name!r}")
    parts = name.replace("\\", "/").split("/")
    if ".." in parts:
        raise UnsafeArchiveError(f"path leaving the archive root not allowed: {name!r}")
    normalized = posixpath.normpath(name)
    if normalized.startswith("../") or normalized == "..":
        raise UnsafeArchiveError(f"path leaving the archive root not allowed: {name!r}")


def safe_extract(
    archive: str | os.PathLike[str],
    dest: str | os.PathLike[str],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_members: int = DEFAULT_MAX_MEMBERS,
) -> int:
    """Extract a .tar/.tar.gz into `dest` (which must not exist yet); return the bytes extracted.

    On any error nothing is left behind: the temporary directory is removed and `dest` is not created.
    """
    dest = Path(dest)
    if dest.exists():
        raise FileExistsError(f"extraction target already exists: {dest}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        total = _extract_into(Path(archive), tmp, max_bytes, max_members)
        _make_readable(tmp)
        os.rename(tmp, dest)
        return total
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _make_readable(root: Path) -> None:
    """World-readable model files: the container may read them as another user (the image runs as
    `model-server`), and mkdtemp made the root 0700."""
    root.chmod(0o755)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)
        for name in filenames:
            path = os.path.join(dirpath, name)
            os.chmod(path, os.stat(path).st_mode & 0o777 | 0o444)


def _extract_into(archive: Path, root: Path, max_bytes: int, max_members: int) -> int:
    total = 0
    count = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            # One pass: validate each member before writing it, so a bad member late in the archive still
            # aborts (the caller removes what was written into the temporary root).
            for member in tar:
                count += 1
                if count > max_members:
                    raise UnsafeArchiveError(f"archive has more than {max_members} members")
                check_member(member)
                total += max(member.size, 0)
                if total > max_bytes:
                    raise UnsafeArchiveError(
                        f"archive expands to more than {max_bytes} bytes (decompression bomb?)"
                    )
                try:
                    tar.extract(member, root, filter="data")
                except tarfile.FilterError as err:
                    raise UnsafeArchiveError(f"rejected by tarfile's data filter: {err}") from err
    except OSError as err:
        if err.errno in HOST_ERRNOS:
            raise  # a full disk is the server's condition: the caller answers 5xx, not "bad archive"
        raise UnsafeArchiveError(f"cannot extract {archive.name}: {err}") from err
    except (tarfile.ReadError, tarfile.CompressionError, EOFError) as err:
        raise UnsafeArchiveError(f"cannot extract {archive.name}: {err}") from err
    if count == 0:
        raise UnsafeArchiveError(f"archive is empty: {archive.name}")
    return total
