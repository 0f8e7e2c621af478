"""All environment configuration of the handler, read in one place."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from sklearn_mme.handler.content_types import (
    DEFAULT_CONTENT_TYPE,
    SUPPORTED_ACCEPT,
    SUPPORTED_CONTENT_TYPES,
    canonical,
)

logger = logging.getLogger(__name__)

_MB = 1024 * 1024


class SettingsError(ValueError):
    """A setting the handler cannot run with (unlike the others, not replaced by its default)."""


@dataclass(frozen=True)
class Settings:
    max_payload_bytes: int = 6 * _MB  # SAGEMAKER_MAX_PAYLOAD_IN_MB: SageMaker's own runtime limit
    default_accept: str = "application/json"  # SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT: for `*/*` or no Accept
    default_content_type: str = DEFAULT_CONTENT_TYPE  # MME_DEFAULT_CONTENT_TYPE: request without Content-Type
    skops_trusted_types: tuple[str, ...] = ()  # MME_SKOPS_TRUSTED_TYPES: comma-separated type names
    program: str = "inference.py"  # SAGEMAKER_PROGRAM: the user script in a model's code/ (toolkit's name)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default os.environ); bad values log a warning and keep the default,
        except SAGEMAKER_PROGRAM, whose bad value raises SettingsError (another script would run)."""
        env = os.environ if env is None else env
        base = cls()
        max_payload = base.max_payload_bytes
        raw = env.get("SAGEMAKER_MAX_PAYLOAD_IN_MB", "").strip()
        if raw:
            try:
                mb = float(raw)
                if not mb > 0:
                    raise ValueError(raw)
                max_payload = int(mb * _MB)
            except ValueError:
                logger.warning("ignoring SAGEMAKER_MAX_PAYLOAD_IN_MB=%r: not a positive number", raw)
        return cls(
            max_payload_bytes=max_payload,
            default_accept=_media_type(
                env, "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", SUPPORTED_ACCEPT, base.default_accept
            ),
            default_content_type=_media_type(
                env, "MME_DEFAULT_CONTENT_TYPE", SUPPORTED_CONTENT_TYPES, base.default_content_type
            ),
            skops_trusted_types=tuple(
                t.strip() for t in env.get("MME_SKOPS_TRUSTED_TYPES", "").split(",") if t.strip()
            ),
            program=_program(env.get("SAGEMAKER_PROGRAM"), base.program),
        )


def _program(raw: str | None, default: str) -> str:
    """SAGEMAKER_PROGRAM as the toolkit reads it: a script name (`serve.py`) or module name (`serve`) in
    code/; never a path."""
    if raw is None:
        return default
    name = raw.strip()
    if not name:
        raise SettingsError("SAGEMAKER_PROGRAM is set but empty: name the script in code/, e.g. inference.py")
    if "/" in name or "\\" in name:
        raise SettingsError(f"SAGEMAKER_PROGRAM={raw!r} is a path: name a script in the model's code/")
    return name if name.endswith(".py") else name + ".py"


def _media_type(env: Mapping[str, str], name: str, supported: tuple[str, ...], default: str) -> str:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    value = canonical(raw.split(";")[0])
    if value not in supported:
        logger.warning("ignoring %s=%r: supported are %s", name, raw, ", ".join(supported))
        return default
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once (tests call `get_settings.cache_clear()` after changing env)."""
    return Settings.from_env()
