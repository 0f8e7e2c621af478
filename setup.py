"""Build step of the wheel: compile what `serve` needs beside the Python code (the MMS plugin jar and the
C launcher, container/build_native.sh) into the package's lib/ folder. Everything else is pyproject.toml."""

import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py


class BuildWithNative(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # a checkout: scripts/setup.sh builds into container/lib, where the editable install looks
        import mms  # a build requirement (pyproject.toml [build-system])

        mms_jar = Path(mms.__file__).parent / "frontend" / "model-server.jar"
        out = Path(self.build_lib) / "sklearn_mme" / "container" / "lib"
        script = Path("container") / "build_native.sh"
        subprocess.run(["bash", str(script), str(out), str(mms_jar)], check=True)


class BinaryDistribution(Distribution):
    """The launcher is a native binary: the wheel is tagged for this platform, not py3-none-any."""

    def has_ext_modules(self) -> bool:
        return True


setup(cmdclass={"build_py": BuildWithNative}, distclass=BinaryDistribution)
