"""Crafted archives: traversal, absolute paths, links, devices, bombs are refused; nothing lands outside."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sklearn_mme.harness.extract import UnsafeArchiveError, check_member, safe_extract
from tests.support import write_tar


class _Zeros(io.RawIOBase):
    """An endless stream of zero bytes, so a bomb needs no memory to build."""

    def readable(self) -> bool:
        return True

    def readinto(self, buf: bytearray) -> int:  # type: ignore[override]
        buf[:] = bytes(len(buf))
        return len(buf)


def _info(name: str, kind: bytes = tarfile.REGTYPE, size: int = 0, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = size
    info.linkname = linkname
    info.mode = 0o644
    return info


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture()
def area(tmp_path: Path) -> tuple[Path, Path]:
    """(a sandbox whose contents are checked before/after, the extraction target inside it)."""
    sandbox = tmp_path / "sandbox"
    (sandbox / "models").mkdir(parents=True)
    (sandbox / "victim.txt").write_text("original")
    return sandbox, sandbox / "models" / "m1"


GOOD = (_info("model.joblib"), b"model-bytes")


@pytest.mark.parametrize(
    "members, needle",
    [
        ([GOOD, (_info("../evil.txt"), b"x")], "leaving the archive root"),
        ([GOOD, (_info("code/../../evil.txt"), b"x")], "leaving the archive root"),
        ([(_info("../../victim.txt"), b"pwned")], "leaving the archive root"),
        ([GOOD, (_info("/tmp/evil-abs.txt"), b"x")], "absolute path"),
        ([GOOD, (_info("link", tarfile.SYMTYPE, linkname="../victim.txt"), None)], "symlink"),
        ([GOOD, (_info("link", tarfile.SYMTYPE, linkname="/etc/passwd"), None)], "symlink"),
        (
            [GOOD, (_info("code", tarfile.SYMTYPE, linkname="../.."), None), (_info("code/x.py"), b"x")],
            "symlink",
        ),
        ([GOOD, (_info("hard", tarfile.LNKTYPE, linkname="../victim.txt"), None)], "hardlink"),
        ([GOOD, (_info("hard", tarfile.LNKTYPE, linkname="/etc/passwd"), None)], "hardlink"),
        ([GOOD, (_info("null", tarfile.CHRTYPE), None)], "device"),
        ([GOOD, (_info("disk", tarfile.BLKTYPE), None)], "device"),
        ([GOOD, (_info("pipe", tarfile.FIFOTYPE), None)], "FIFO"),
    ],
    ids=[
        "dotdot",
        "nested-dotdot",
        "dotdot-overwrite",
        "absolute",
        "symlink-up",
        "symlink-abs",
        "symlink-dir-then-write",
        "hardlink-up",
        "hardlink-abs",
        "chardev",
        "blockdev",
        "fifo",
    ],
)
def test_crafted_archive_rejected(
    tmp_path: Path, area: tuple[Path, Path], members: list, needle: str
) -> None:
    sandbox, target = area
    archive = write_tar(tmp_path / "evil.tar.gz", members)
    before = snapshot(sandbox)
    with pytest.raises(UnsafeArchiveError, match=needle):
        safe_extract(archive, target)
    assert snapshot(sandbox) == before  # no target, no temp dir, nothing beside it
    assert (sandbox / "victim.txt").read_text() == "original"
    assert not Path("/tmp/evil-abs.txt").exists()


def test_decompression_bomb_rejected_before_writing(tmp_path: Path, area: tuple[Path, Path]) -> None:
    sandbox, target = area
    archive = tmp_path / "bomb.tar.gz"
    declared = 256 * 1024 * 1024
    with tarfile.open(archive, "w:gz") as tar:
        tar.addfile(_info("model.joblib", size=declared), io.BufferedReader(_Zeros()))
    assert archive.stat().st_size < 2 * 1024 * 1024  # tiny on disk, 256 MiB expanded
    before = snapshot(sandbox)
    with pytest.raises(UnsafeArchiveError, match="decompression bomb"):
        safe_extract(archive, target, max_bytes=16 * 1024 * 1024)
    assert snapshot(sandbox) == before


def test_too_many_members_rejected(tmp_path: Path, area: tuple[Path, Path]) -> None:
    sandbox, target = area
    archive = write_tar(tmp_path / "many.tar.gz", [(_info(f"f{i}"), b"") for i in range(50)])
    with pytest.raises(UnsafeArchiveError, match="more than 20 members"):
        safe_extract(archive, target, max_members=20)
    assert not target.exists()


def test_not_an_archive(tmp_path: Path, area: tuple[Path, Path]) -> None:
    _, target = area
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"definitely not gzip")
    with pytest.raises(UnsafeArchiveError, match="cannot extract"):
        safe_extract(junk, target)
    assert not target.exists()


def test_good_archive_extracts_with_code(tmp_path: Path, area: tuple[Path, Path]) -> None:
    sandbox, target = area
    archive = write_tar(
        tmp_path / "ok.tar.gz",
        [
            GOOD,
            (_info("code/inference.py"), b"def model_fn(d):\n    return 1\n"),
            (_info("code/", tarfile.DIRTYPE), None),
        ],
    )
    total = safe_extract(archive, target)
    assert total == len(b"model-bytes") + len(b"def model_fn(d):\n    return 1\n")
    assert (target / "model.joblib").read_bytes() == b"model-bytes"
    assert (target / "code" / "inference.py").is_file()
    # Only the target appeared: the temporary directory was renamed, not left beside it.
    assert snapshot(sandbox) - {"victim.txt", "models"} == {
        "models/m1",
        "models/m1/model.joblib",
        "models/m1/code",
        "models/m1/code/inference.py",
    }


def test_existing_target_is_not_overwritten(tmp_path: Path, area: tuple[Path, Path]) -> None:
    _, target = area
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(FileExistsError):
        safe_extract(write_tar(tmp_path / "ok.tar.gz", [GOOD]), target)
    assert (target / "keep").read_text() == "x"


def test_data_filter_strips_dangerous_modes(tmp_path: Path, area: tuple[Path, Path]) -> None:
    _, target = area
    info = _info("model.joblib")
    info.mode = 0o4777  # setuid, world-writable
    safe_extract(write_tar(tmp_path / "mode.tar.gz", [(info, b"x")]), target)
    mode = os.stat(target / "model.joblib").st_mode
    assert not mode & 0o4000 and not mode & 0o002


_segment = st.sampled_from(["..", ".", "a", "b", "code", "", "/"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(parts=st.lists(_segment, min_size=1, max_size=5), leading_slash=st.booleans())
def test_no_member_name_escapes(tmp_path: Path, parts: list[str], leading_slash: bool) -> None:
    """Whatever the name, a member is either refused or lands inside the target."""
    name = ("/" if leading_slash else "") + "/".join(parts)
    info = _info(name)
    try:
        check_member(info)
    except UnsafeArchiveError:
        return
    root = (tmp_path / "root").resolve()
    resolved = (root / name).resolve()
    assert resolved == root or root in resolved.parents, name
