"""`python bench/run.py`: the same as `python -m bench`, runnable as a plain script."""

import sys
from pathlib import Path


def _entry() -> int:
    # Run as a file, Python puts bench/ (not the repository) on sys.path; the package needs the latter.
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(_entry())
