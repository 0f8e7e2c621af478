"""Model stores: where the `*.tar.gz` artifacts live, as a directory or an S3 prefix.

A TargetModel is the key relative to the store (`segment_a.tar.gz`, `region/eu/model.tar.gz`), the same way
SageMaker resolves it against the endpoint's ModelDataUrl prefix.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

MAX_KEY_LENGTH = 1024


class StoreError(Exception):
    """The store cannot be used (bad URI, unreachable, access denied); the message says why."""


class InvalidKey(ValueError):
    """A TargetModel that cannot name an object in a store."""


@dataclass(frozen=True)
class StoreObject:
    key: str
    size: int
    etag: str  # changes when the object's content changes (S3's ETag; a SHA-256 of the file for directories)


def validate_key(key: str) -> str:
    """Return `key` when it is a clean relative key, else raise InvalidKey with the reason."""
    if not key:
        raise InvalidKey("TargetModel is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidKey(f"TargetModel is longer than {MAX_KEY_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
        raise InvalidKey("TargetModel contains control characters")
    if key.startswith("/") or "\\" in key:
        raise InvalidKey(f"TargetModel must be a relative key with '/' separators: {key!r}")
    parts = key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidKey(f"TargetModel has an empty, '.' or '..' path segment: {key!r}")
    return key


class Store(Protocol):
    uri: str

    def list(self) -> list[StoreObject]: ...

    def stat(self, key: str) -> StoreObject | None: ...

    def download(self, key: str, dest: Path) -> int: ...

    def upload(self, source: Path, key: str) -> StoreObject: ...

    def delete(self, key: str) -> bool: ...


RACY_NS = 2_000_000_000  # a file changed this close to its hashing is hashed again next time


class ContentHashes:
    """SHA-256 of files, computed once per version of a file.

    `cp -p`, `rsync -t` and `tar x` replace a file keeping its size and mtime, so those cannot tell versions
    apart; the inode change time can: every write, rename onto the path and `utime` (which is how mtimes
    are kept) sets it to now, and no system call sets it back. A memo is reused only when (device, inode,
    size, mtime, ctime) are all unchanged and the ctime was at least RACY_NS older than the hashing (the
    kernel's timestamps are coarse, so a change in the same tick as an earlier one could keep the ctime:
    the same precaution git takes with its index).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._memo: dict[str, tuple[tuple[int, ...], str]] = {}

    @staticmethod
    def _signature(st: os.stat_result) -> tuple[int, ...]:
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def digest(self, path: Path, st: os.stat_result) -> str:
        sig = self._signature(st)
        with self._lock:
            memo = self._memo.get(str(path))
        if memo is not None and memo[0] == sig:
            return memo[1]
        started = time.time_ns()
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
            after = os.fstat(f.fileno())
        if self._signature(after) == sig and started - after.st_ctime_ns > RACY_NS:
            with self._lock:
                self._memo[str(path)] = (sig, digest)
        return digest


class DirStore:
    """A local directory; keys are relative paths below it."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.uri = str(self.root)
        self._hashes = ContentHashes()

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        # A symlink inside the store must not reach files outside it.
        if self.root not in path.parents:
            raise InvalidKey(f"TargetModel resolves outside the store: {key!r}")
        return path

    def _object(self, key: str, path: Path, st: os.stat_result) -> StoreObject:
        return StoreObject(key, st.st_size, self._hashes.digest(path, st))

    def list(self) -> list[StoreObject]:
        if not self.root.is_dir():
            raise StoreError(f"model store directory does not exist: {self.root}")
        out = []
        for path in sorted(self.root.rglob("*.tar.gz")):
            if path.is_file():
                out.append(self._object(path.relative_to(self.root).as_posix(), path, path.stat()))
        return out

    def stat(self, key: str) -> StoreObject | None:
        path = self._path(key)
        try:
            st = path.stat()
            return self._object(key, path, st) if path.is_file() else None
        except FileNotFoundError:  # gone, possibly between stat and hashing
            return None

    def download(self, key: str, dest: Path) -> int:
        path = self._path(key)
        try:
            shutil.copyfile(path, dest)
        except FileNotFoundError:
            raise KeyError(key) from None
        return dest.stat().st_size

    def upload(self, source: Path, key: str) -> StoreObject:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Copy then rename, so a reader never sees a half-written artifact.
        fd, tmp = tempfile.mkstemp(prefix=".upload.", dir=path.parent)
        os.close(fd)
        try:
            shutil.copyfile(source, tmp)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self._object(key, path, path.stat())

    def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True


class S3Store:
    """An S3 prefix (`s3://bucket/prefix/`), through boto3 with the usual AWS_* settings.

    `endpoint_url` (or AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL) points at an S3-compatible server; path-style
    addressing is used then, because such servers rarely have per-bucket DNS names.
    """

    def __init__(self, uri: str, endpoint_url: str | None = None) -> None:
        import boto3
        from botocore.config import Config

        parsed = urlparse(uri)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise StoreError(f"not an S3 URI: {uri!r} (expected s3://bucket/prefix/)")
        self.bucket = parsed.netloc
        prefix = parsed.path.lstrip("/")
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.uri = f"s3://{self.bucket}/{self.prefix}"
        endpoint_url = (
            endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        )
        config = Config(
            s3={"addressing_style": "path"} if endpoint_url else {},
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            max_pool_connections=32,
        )
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or None
        session = boto3.session.Session()
        if region is None and session.region_name is None:
            region = "us-east-1"
        self.endpoint_url = endpoint_url
        self._s3 = session.client("s3", endpoint_url=endpoint_url, region_name=region, config=config)

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    def _wrap(self, err: Exception) -> StoreError:
        return StoreError(f"S3 store {self.uri}: {err}")

    def _pages(self) -> Iterator[dict]:
        paginator = self._s3.get_paginator("list_objects_v2")
        yield from paginator.paginate(Bucket=self.bucket, Prefix=self.prefix)

    def list(self) -> list[StoreObject]:
        from botocore.exceptions import BotoCoreError, ClientError

        out = []
        try:
            for page in self._pages():
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(self.prefix) :]
                    if key.endswith(".tar.gz"):
                        out.append(StoreObject(key, int(obj["Size"]), obj.get("ETag", "").strip('"')))
        except (BotoCoreError, ClientError) as err:
            raise self._wrap(err) from err
        return sorted(out, key=lambda o: o.key)

    def stat(self, key: str) -> StoreObject | None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            head = self._s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise self._wrap(err) from err
        except BotoCoreError as err:
            raise self._wrap(err) from err
        return StoreObject(key, int(head["ContentLength"]), head.get("ETag", "").strip('"'))

    def download(self, key: str, dest: Path) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            obj = self._s3.get_object(Bucket=self.bucket, Key=self._key(key))
            with open(dest, "wb") as out:
                for chunk in obj["Body"].iter_chunks(1024 * 1024):
                    out.write(chunk)
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                raise KeyError(key) from None
            raise self._wrap(err) from err
        except BotoCoreError as err:
            raise self._wrap(err) from err
        return dest.stat().st_size

    def upload(self, source: Path, key: str) -> StoreObject:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            with open(source, "rb") as body:
                self._s3.put_object(Bucket=self.bucket, Key=self._key(key), Body=body)
        except (BotoCoreError, ClientError) as err:
            raise self._wrap(err) from err
        stat = self.stat(key)
        if stat is None:
            raise StoreError(f"uploaded {key} but the store does not show it")
        return stat

    def delete(self, key: str) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        if self.stat(key) is None:
            return False
        try:
            self._s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        except (BotoCoreError, ClientError) as err:
            raise self._wrap(err) from err
        return True


def open_store(uri: str, s3_endpoint_url: str | None = None) -> Store:
    """`s3://bucket/prefix/` -> S3Store, anything else is a directory (`add` creates it when missing)."""
    if uri.startswith("s3://"):
        return S3Store(uri, endpoint_url=s3_endpoint_url)
    if "://" in uri:
        raise StoreError(f"unsupported model store URI: {uri!r} (use a directory or s3://bucket/prefix/)")
    return DirStore(uri)
