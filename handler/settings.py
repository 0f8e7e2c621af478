"""All environment configuration of the handler, read in one place.

Each variable is defined once, as an `EnvVar` (name, parser, default, one doc line); `container/serve` checks
these together with its own at start-up (container/settings.py), so a bad value stops the server with one line
naming the variable instead of surfacing in a worker. The README's settings table is generated from them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from sklearn_mme.handler.content_types import (
    DEFAULT_CONTENT_TYPE,
    SUPPORTED_ACCEPT,
    SUPPORTED_CONTENT_TYPES,
    canonical,
)

_MB = 1024 * 1024
MAX_PAYLOAD_MB = 1024  # far above SageMaker's 6 MB; guards against a typo of a few zeros


class SettingsError(ValueError):
    """A setting has a value the server cannot run with; the message names the variable and says why."""


@dataclass(frozen=True)
class EnvVar:
    """One environment variable: its name, how its text is read, its default (as a user would write it)."""

    name: str
    parse: Callable[[str], Any]  # raises ValueError with a short reason
    default: str  # "" means unset
    doc: str  # one line, for the README's settings table
    shown_default: str | None = None  # for the table, when the default is too long to show

    def read(self, env: Mapping[str, str]) -> Any:
        """The parsed value (the default when unset or blank; None when that is unset too)."""
        raw = env.get(self.name, "").strip() or self.default
        if not raw:
            return None
        try:
            return self.parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{self.name}={raw!r} {exc}") from None


def _payload_bytes(text: str) -> int:
    try:
        mb = float(text)
    except ValueError:
        raise ValueError("is not a number of megabytes") from None
    if not 0 < mb <= MAX_PAYLOAD_MB:
        raise ValueError(f"is out of range (more than 0, at most {MAX_PAYLOAD_MB})")
    return int(mb * _MB)


def _media_type(supported: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = canonical(text.split(";")[0])
        if value not in supported:
            raise ValueError(f"is not supported (choose one of {', '.join(supported)})")
        return value

    return parse


_TYPE_NAME = re.compile(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*")


def _type_names(text: str) -> tuple[str, ...]:
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [n for n in names if not _TYPE_NAME.fullmatch(n)]
    if bad:
        raise ValueError(f"has {bad[0]!r}, which is not a dotted type name (e.g. sklearn.svm.SVC)")
    return names


MAX_PAYLOAD = EnvVar("SAGEMAKER_MAX_PAYLOAD_IN_MB", _payload_bytes, "6",
                     "request body limit in MB (413 above); SageMaker's own runtime limit is 6")
DEFAULT_ACCEPT = EnvVar("SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT", _media_type(SUPPORTED_ACCEPT),
                        "application/json", "response type for `*/*` or no Accept")
DEFAULT_CONTENT = EnvVar("MME_DEFAULT_CONTENT_TYPE", _media_type(SUPPORTED_CONTENT_TYPES),
                         DEFAULT_CONTENT_TYPE, "how a request without Content-Type is read")
SKOPS_TRUSTED = EnvVar("MME_SKOPS_TRUSTED_TYPES", _type_names, "",
                       "comma-separated extra types trusted when loading `model.skops`")


def _program(text: str) -> str:
    """A script name (`serve.py`) or module name (`serve`) in code/, as the toolkit reads it; never a path."""
    if "/" in text or "\\" in text:
        raise ValueError("is a path: name a script in the model's code/, e.g. inference.py")
    return text if text.endswith(".py") else text + ".py"


PROGRAM = EnvVar("SAGEMAKER_PROGRAM", _program, "inference.py",
                 "the user script in a model's `code/` that may override the handler's functions")
VERSION_SKEW_POLICIES = ("warn", "refuse")


def _skew_policy(text: str) -> str:
    if text.lower() not in VERSION_SKEW_POLICIES:
        raise ValueError(f"is not one of {', '.join(VERSION_SKEW_POLICIES)}")
    return text.lower()


VERSION_SKEW = EnvVar("MME_VERSION_SKEW", _skew_policy, "warn",
                      "a model written by another scikit-learn/XGBoost/LightGBM version: `warn` (log, "
                      "count, load) or `refuse` (the load answers 400)")
VARIABLES: tuple[EnvVar, ...] = (MAX_PAYLOAD, DEFAULT_ACCEPT, DEFAULT_CONTENT, SKOPS_TRUSTED, PROGRAM,
                                 VERSION_SKEW)


@dataclass(frozen=True)
class Settings:
    max_payload_bytes: int = MAX_PAYLOAD.parse(MAX_PAYLOAD.default)
    default_accept: str = DEFAULT_ACCEPT.default
    default_content_type: str = DEFAULT_CONTENT.default
    skops_trusted_types: tuple[str, ...] = ()
    program: str = PROGRAM.default
    version_skew: str = VERSION_SKEW.default

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default os.environ); a bad value raises SettingsError naming it."""
        env = os.environ if env is None else env
        return cls(
            max_payload_bytes=MAX_PAYLOAD.read(env),
            default_accept=DEFAULT_ACCEPT.read(env),
            default_content_type=DEFAULT_CONTENT.read(env),
            skops_trusted_types=SKOPS_TRUSTED.read(env) or (),
            program=PROGRAM.read(env),
            version_skew=VERSION_SKEW.read(env),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once (tests call `get_settings.cache_clear()` after changing env)."""
    return Settings.from_env()
