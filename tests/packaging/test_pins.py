"""pyproject.toml is the one place versions are pinned; the build requirement on MMS must be that same pin."""

from __future__ import annotations

import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_build_requirement_on_mms_is_the_runtime_pin() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    runtime = [d for d in project["project"]["dependencies"] if d.startswith("multi-model-server")]
    build = [d for d in project["build-system"]["requires"] if d.startswith("multi-model-server")]
    assert runtime and runtime == build, (runtime, build)
