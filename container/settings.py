"""Settings of the serving container, read from the environment in one place.

SageMaker's own variables (SAGEMAKER_*) keep their documented meaning; MME_* are ours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

# MMS's Java front rejects ports from 32768 up ("Invalid port number"); say so up front.
MAX_MMS_PORT = 32767
BACKENDS = ("zygote", "vanilla")
LAUNCHERS = ("auto", "c", "python")


class SettingsError(ValueError):
    """A setting has a value the container cannot run with; the message says which and why."""


def parse_size(text: str) -> int:
    """'512MB', '2GiB', '1000000' -> bytes (decimal and binary suffixes)."""
    units = {
        "": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
        "kib": 1024, "mib": 1024**2, "gib": 1024**3, "ki": 1024, "mi": 1024**2, "gi": 1024**3,
    }
    s = text.strip().lower().replace(" ", "")
    num = s.rstrip("abcdefghijklmnopqrstuvwxyz")
    unit = s[len(num):]
    if unit not in units or not num:
        raise SettingsError(f"not a size: {text!r} (use e.g. 512MB or 2GiB)")
    return int(float(num) * units[unit])


def _int(env: dict[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a whole number") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range {lo}..{hi}")
    return value


@dataclass(frozen=True)
class ServeSettings:
    port: int
    workers_per_model: int
    response_timeout_s: int
    max_payload_mb: int
    backend: str
    memory_budget_bytes: int | None
    startup_timeout_s: int
    handler: str
    launcher: str

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> ServeSettings:
        env = dict(os.environ if environ is None else environ)
        raw_port = env.get("SAGEMAKER_BIND_TO_PORT", "8080").strip() or "8080"
        try:
            port = int(raw_port)
        except ValueError:
            raise SettingsError(f"SAGEMAKER_BIND_TO_PORT={raw_port!r} is not a port number") from None
        if not 1 <= port <= MAX_MMS_PORT:
            raise SettingsError(
                f"SAGEMAKER_BIND_TO_PORT={port}: multi-model-server only accepts ports 1..{MAX_MMS_PORT}"
            )
        backend = env.get("MME_BACKEND", "zygote").strip() or "zygote"
        if backend not in BACKENDS:
            raise SettingsError(f"MME_BACKEND={backend!r}: choose one of {', '.join(BACKENDS)}")
        launcher = env.get("MME_LAUNCHER", "auto").strip() or "auto"
        if launcher not in LAUNCHERS:
            raise SettingsError(f"MME_LAUNCHER={launcher!r}: choose one of {', '.join(LAUNCHERS)}")
        budget = env.get("MME_MEMORY_BUDGET", "").strip()
        return cls(
            port=port,
            workers_per_model=_int(env, "SAGEMAKER_MODEL_SERVER_WORKERS", 1, 1, 64),
            response_timeout_s=_int(env, "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", 60, 1, 3600),
            max_payload_mb=_int(env, "SAGEMAKER_MAX_PAYLOAD_IN_MB", 6, 1, 1024),
            backend=backend,
            memory_budget_bytes=parse_size(budget) if budget else None,
            startup_timeout_s=_int(env, "SAGEMAKER_STARTUP_TIMEOUT", 120, 1, 3600),
            handler=env.get("MME_HANDLER", "sklearn_mme.container.mms_entry:handle"),
            launcher=launcher,
        )
