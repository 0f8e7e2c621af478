"""Directory store, packaging, the artifact disk cache and size parsing (no servers)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sklearn_mme.harness.artifacts import ArtifactCache, ArtifactNotFound
from sklearn_mme.harness.packaging import PackagingError, package
from sklearn_mme.harness.store import DirStore, InvalidKey, StoreError, open_store, validate_key
from sklearn_mme.harness.units import format_size, parse_size

MME_LOCAL = Path(sys.executable).parent / "mme-local"


def _artifact(tmp: Path, name: str, payload: bytes = b"weights") -> Path:
    src = tmp / f"src-{name}"
    src.mkdir(parents=True, exist_ok=True)
    (src / "model.joblib").write_bytes(payload)
    return package(src, tmp / f"{name}.tar.gz")


# ---- keys ----


@pytest.mark.parametrize("key", ["segment_a.tar.gz", "region/eu/model.tar.gz", "a-b_c.1/x.tar.gz"])
def test_valid_keys(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize(
    "key",
    [
        "",
        "/abs.tar.gz",
        "../up.tar.gz",
        "a/../b.tar.gz",
        "a//b.tar.gz",
        "./a.tar.gz",
        "a\\b.tar.gz",
        "a\nb.tar.gz",
        "x" * 1025,
    ],
)
def test_invalid_keys(key: str) -> None:
    with pytest.raises(InvalidKey):
        validate_key(key)


# ---- DirStore ----


def test_dir_store_roundtrip(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "store")
    a = _artifact(tmp_path, "a", b"aaaa")
    b = _artifact(tmp_path, "b", b"bbbbbbbb")
    obj_a = store.upload(a, "segment_a.tar.gz")
    obj_b = store.upload(b, "region/eu/model.tar.gz")
    assert obj_a.size == a.stat().st_size and obj_b.size == b.stat().st_size
    assert [o.key for o in store.list()] == ["region/eu/model.tar.gz", "segment_a.tar.gz"]
    assert store.stat("segment_a.tar.gz") == obj_a
    assert store.stat("missing.tar.gz") is None
    out = tmp_path / "dl.tar.gz"
    assert store.download("region/eu/model.tar.gz", out) == b.stat().st_size
    assert out.read_bytes() == b.read_bytes()
    with pytest.raises(KeyError):
        store.download("missing.tar.gz", tmp_path / "x")
    assert store.delete("segment_a.tar.gz") is True
    assert store.delete("segment_a.tar.gz") is False
    assert [o.key for o in store.list()] == ["region/eu/model.tar.gz"]
    assert not [p for p in (tmp_path / "store").rglob(".upload.*")]  # no temp files left


def test_dir_store_etag_changes_on_rewrite(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "store")
    first = store.upload(_artifact(tmp_path, "a", b"one"), "m.tar.gz")
    os.utime(tmp_path / "store" / "m.tar.gz", ns=(0, 0))
    second = store.upload(_artifact(tmp_path, "b", b"two-two"), "m.tar.gz")
    assert first.etag != second.etag


def test_dir_store_refuses_escaping_keys_and_symlinks(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    outside = tmp_path / "secret.tar.gz"
    outside.write_bytes(b"secret")
    (root / "link.tar.gz").symlink_to(outside)
    store = DirStore(root)
    with pytest.raises(InvalidKey):
        store.stat("../secret.tar.gz")
    with pytest.raises(InvalidKey, match="outside the store"):
        store.download("link.tar.gz", tmp_path / "x")


def test_open_store(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path)), DirStore)
    with pytest.raises(StoreError, match="unsupported"):
        open_store("gs://bucket/models/")
    with pytest.raises(StoreError, match="does not exist"):
        DirStore(tmp_path / "nope").list()


# ---- packaging ----


def _names(archive: Path) -> list[str]:
    with tarfile.open(archive) as tar:
        return sorted(tar.getnames())


def test_package_file_becomes_model_joblib(tmp_path: Path) -> None:
    f = tmp_path / "clf.pkl"
    f.write_bytes(b"pickle")
    assert _names(package(f, tmp_path / "out.tar.gz")) == ["mme-manifest.json", "model.joblib"]


def test_package_dir_with_code_is_reproducible(tmp_path: Path) -> None:
    src = tmp_path / "m"
    (src / "code" / "__pycache__").mkdir(parents=True)
    (src / "model.joblib").write_bytes(b"w")
    (src / "code" / "inference.py").write_text("x = 1\n")
    (src / "code" / "__pycache__" / "inference.cpython-311.pyc").write_bytes(b"junk")
    one = package(src, tmp_path / "one.tar.gz")
    os.utime(src / "model.joblib", (1, 1))
    two = package(src, tmp_path / "two.tar.gz")
    assert _names(one) == ["code/inference.py", "mme-manifest.json", "model.joblib"]
    assert one.read_bytes() == two.read_bytes()


def test_package_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(PackagingError, match="no model file"):
        package(tmp_path / "empty", tmp_path / "x.tar.gz")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(PackagingError, match="not a model file"):
        package(tmp_path / "notes.txt", tmp_path / "x.tar.gz")
    with pytest.raises(PackagingError, match="no such"):
        package(tmp_path / "missing", tmp_path / "x.tar.gz")


@pytest.mark.parametrize("name", ["m.skops", "m.joblib", "m.pkl", "m.pickle"])
def test_mme_local_package_names_the_key_without_the_model_suffix(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_bytes(b"model")
    done = subprocess.run([str(MME_LOCAL), "package", name], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.glob("*.tar.gz")) == ["m.tar.gz"]
    assert _names(tmp_path / "m.tar.gz") == [
        "mme-manifest.json", "model.skops" if name.endswith(".skops") else "model.joblib"]


# ---- artifact cache ----


def test_artifact_cache_downloads_once_and_revalidates(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "store")
    store.upload(_artifact(tmp_path, "a", b"first"), "a.tar.gz")
    cache = ArtifactCache(store, tmp_path / "cache", budget_bytes=10**9)
    with cache.fetch("a.tar.gz") as got:
        assert got.downloaded and got.path.is_file()
        first = got.path.read_bytes()
    with cache.fetch("a.tar.gz") as got:
        assert not got.downloaded
    assert (cache.downloads, cache.hits) == (1, 1)
    os.utime(tmp_path / "store" / "a.tar.gz", ns=(0, 0))
    store.upload(_artifact(tmp_path, "b", b"second-version"), "a.tar.gz")
    with cache.fetch("a.tar.gz") as got:
        assert got.downloaded and got.path.read_bytes() != first
    with pytest.raises(ArtifactNotFound):
        with cache.fetch("missing.tar.gz"):
            pass


def test_artifact_cache_budget_evicts_least_recently_used(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "store")
    for name in "abc":
        store.upload(_artifact(tmp_path, name, os.urandom(4000)), f"{name}.tar.gz")
    size = store.stat("a.tar.gz").size
    cache = ArtifactCache(store, tmp_path / "cache", budget_bytes=2 * size + size // 2)
    for key in ("a.tar.gz", "b.tar.gz", "a.tar.gz", "c.tar.gz"):  # b is least recently used when c arrives
        with cache.fetch(key):
            pass
    assert cache.evictions == 1
    with cache.fetch("a.tar.gz") as got:
        assert not got.downloaded
    with cache.fetch("b.tar.gz") as got:
        assert got.downloaded
    assert cache.used_bytes <= cache.budget_bytes


def test_artifact_in_use_is_not_evicted(tmp_path: Path) -> None:
    store = DirStore(tmp_path / "store")
    store.upload(_artifact(tmp_path, "a", os.urandom(3000)), "a.tar.gz")
    cache = ArtifactCache(store, tmp_path / "cache", budget_bytes=10)  # smaller than any artifact
    with cache.fetch("a.tar.gz") as got:
        assert got.path.is_file()  # pinned while in use
    assert not got.path.exists() and cache.used_bytes == 0  # released: over budget, so dropped


# ---- sizes ----


@pytest.mark.parametrize(
    "text, value",
    [
        ("512MB", 512_000_000),
        ("2GiB", 2 * 1024**3),
        ("1000", 1000),
        ("1.5 KiB", 1536),
        ("64k", 64_000),
        ("3gb", 3_000_000_000),
        ("10B", 10),
        ("1TB", 10**12),  # the container's MME_MEMORY_BUDGET reads sizes with this same function
        ("1TiB", 1024**4),
    ],
)
def test_parse_size(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "12XB", "-5MB", "0", "1e9", "MB"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


@given(st.integers(min_value=1, max_value=10**15))
def test_parse_size_plain_bytes_roundtrip(n: int) -> None:
    assert parse_size(str(n)) == n
    assert format_size(n)
