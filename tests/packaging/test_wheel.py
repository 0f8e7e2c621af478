"""The project as a user installs it: a built wheel (not editable) in a fresh virtualenv.

Everything `mme-local serve --runtime process` needs must come from the wheel: the serving code, the MMS
plugin jar and the launcher compiled by setup.py's build step, log4j's configuration. Nothing of the checkout
may be on the path (the demo runs from an empty directory), and the install adds no generic top-level package.
"""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# Building the wheel and installing its dependencies into a new venv takes minutes, not the suite's 300 s.
pytestmark = [pytest.mark.mms, pytest.mark.timeout(1800)]


def _run(argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{argv[:4]} exited {proc.returncode}:\n{tail}"
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the wheel and its `harness` extra installed; returns the venv."""
    tmp = tmp_path_factory.mktemp("wheel")
    # A copy of the tracked files, so the build neither sees nor leaves anything in the checkout.
    src = tmp / "src"
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    src.mkdir()
    subprocess.run(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", str(tmp / "src.tar")],
                   input=files, check=True)
    subprocess.run(["tar", "-C", str(src), "-xf", str(tmp / "src.tar")], check=True)
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(src)], tmp, 600)
    (wheel,) = dist.glob("sklearn_mme-*.whl")
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp, 120)
    _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f"{wheel}[harness]"], tmp, 900)
    return venv


def _site_packages(venv: Path) -> Path:
    rel = Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    return venv / rel


def test_wheel_installs_one_namespace_with_its_compiled_parts(installed: Path) -> None:
    site = _site_packages(installed)
    top = {p.name for p in site.iterdir()}
    assert "sklearn_mme" in top
    assert not top & {"container", "handler", "harness", "bench", "tests"}, sorted(top)
    lib = site / "sklearn_mme" / "container" / "lib"
    assert (lib / "mme-mms-plugin.jar").is_file()
    assert os.access(lib / "mme-launcher", os.X_OK)
    assert (site / "sklearn_mme" / "container" / "etc" / "log4j2.xml").is_file()
    # Sources that only the build needs stay out of the installed package.
    assert not list((site / "sklearn_mme").rglob("*.java")) and not list((site / "sklearn_mme").rglob("*.c"))


def test_demo_runs_from_the_wheel(installed: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    out = _run([str(installed / "bin" / "mme-local"), "demo", "--rounds", "1"], tmp_path, 600, env)
    assert "answers matching in-process predict" in out
    line = next(ln for ln in out.splitlines() if "answers matching in-process predict" in ln)
    matched, total = line.split()[-1].split("/")
    assert matched == total and int(total) > 0, line
