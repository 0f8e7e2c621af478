"""Sizes and durations as people type and read them.

`parse_size` is the container's (one parser, one set of units, for `--memory-budget` and MME_MEMORY_BUDGET).
"""

from __future__ import annotations

from sklearn_mme.container.settings import parse_size

__all__ = ["format_size", "parse_size"]


def format_size(n: float) -> str:
    """Bytes in binary units, short: 1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # unreachable; keeps type checkers content
