"""The load-step log (MME_STAGE_LOG) in a fork that closed what it inherited, as a fresh host does: a bench
aid must never fail a load (a replaced host died of EBADF on its first stamp)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sklearn_mme.container import stage_clock


@pytest.fixture()
def stage_log(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "stages.log"
    monkeypatch.setenv("_MME_STAGE_LOG", str(path))
    monkeypatch.setattr(stage_clock, "_load_fd", None)
    return path


def _lines(path: Path) -> list[str]:
    return [" ".join(line.split()[i] for i in (0, 1, 3)) for line in path.read_text().splitlines()]


def test_a_fork_that_closed_the_log_opens_it_again(stage_log: Path) -> None:
    stage_clock.load_mark("m", "z_registered")
    os.close(stage_clock._load_fd)  # what Hosts._become_host does to every inherited descriptor
    stage_clock.forget_inherited()
    stage_clock.load_mark("m", "h_frame")
    assert _lines(stage_log) == ["load z_registered m", "load h_frame m"]


def test_a_stamp_on_a_closed_log_is_dropped_not_raised(stage_log: Path) -> None:
    stage_clock.load_mark("m", "z_registered")
    fd = stage_clock._load_fd
    os.close(fd)
    stage_clock.load_mark("m", "h_frame")  # no OSError: the load goes on
    assert _lines(stage_log) == ["load z_registered m"]
    stage_clock._load_fd = None
