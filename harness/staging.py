"""Put a TargetModel's artifact on local disk for the container: one download (through the artifact disk
cache) and one safe extract into a directory named after the model's opaque name."""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from sklearn_mme.harness.accounting import Accounting
from sklearn_mme.harness.artifacts import ArtifactCache, ArtifactNotFound
from sklearn_mme.harness.errors import InternalFailure, ValidationError
from sklearn_mme.harness.extract import HOST_ERRNOS, UnsafeArchiveError, safe_extract
from sklearn_mme.harness.store import InvalidKey, Store, StoreError

log = logging.getLogger("mme_local.staging")


@dataclass(frozen=True)
class Staged:
    directory: Path
    size: int  # extracted bytes: what the capacity policy counts


class Stager:
    def __init__(
        self,
        store: Store,
        artifacts: ArtifactCache,
        models_dir: Path,
        accounting: Accounting,
        max_extract_bytes: int,
    ) -> None:
        self.store = store
        self.artifacts = artifacts
        self.models_dir = Path(models_dir)
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.accounting = accounting
        self.max_extract_bytes = max_extract_bytes

    def stage(self, key: str, name: str) -> Staged:
        """`key`'s artifact extracted under models_dir/`name`; store and archive problems become the
        runtime API's errors."""
        try:
            obj = self.store.stat(key)
        except StoreError as err:
            raise InternalFailure(f"model store unavailable: {err}") from None
        except InvalidKey as err:
            raise ValidationError(str(err)) from None
        if obj is None:
            raise ValidationError(
                f"Failed to download model data for {key}: no such object in {self.store.uri}"
            )
        target = self.models_dir / name
        if target.exists():  # left from an earlier load of the same key
            shutil.rmtree(target)
        try:
            with self.artifacts.fetch(key, obj) as fetched:
                if fetched.downloaded:
                    self.accounting.download(key, fetched.seconds)
                size = safe_extract(fetched.path, target, max_bytes=self.max_extract_bytes)
        except ArtifactNotFound:
            raise ValidationError(f"Failed to download model data for {key}: it left the store") from None
        except UnsafeArchiveError as err:
            raise ValidationError(f"Model artifact {key} was rejected: {err}") from None
        except StoreError as err:
            raise InternalFailure(f"model store unavailable: {err}") from None
        except OSError as err:
            # The harness's own disk (full, read-only, out of descriptors): a server condition, answered as
            # SageMaker answers its own faults (500 InternalFailure), without local paths.
            log.error("staging %s failed: %s", key, err)
            reason = os.strerror(err.errno) if err.errno in HOST_ERRNOS else type(err).__name__
            raise InternalFailure(
                f"Could not stage model data for {key} on the instance: {reason}. Try again later."
            ) from None
        self.accounting.artifact_cache(self.artifacts.used_bytes)
        return Staged(target, size)

    @staticmethod
    def discard(directory: Path | None) -> None:
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
