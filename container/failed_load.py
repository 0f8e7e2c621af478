"""The container log's line for a failed model load: written by `serve`, read back by `mme-local`.

MMS 1.1.11 answers a failed load with the right status but the body "Failed to start workers"; the reason
reaches only the container's log (as it would CloudWatch under SageMaker). One format, kept here, so the
harness can show its users the reason the way they would find it in production.
"""

from __future__ import annotations

PREFIX = "[serve] model "


def format_line(name: str, status: object, reason: object) -> str:
    """The log line, without serve's "[serve] " tag (serve's log() adds it)."""
    one_line = " ".join(str(reason).split())
    return f"model {name!r} failed to load ({status}): {one_line}"


def find_reason(log_text: str, name: str) -> str | None:
    """The reason of the last failed load of `name` in `log_text`, or None."""
    head = f"{PREFIX}{name!r} failed to load ("
    for line in reversed(log_text.splitlines()):
        if line.startswith(head):
            _, sep, reason = line[len(head):].partition("): ")
            return (reason.strip() or None) if sep else None
    return None
