"""Load/unload churn leaves no files behind (issue 14 item 11, container half), on a real `container/serve`.

The memory ledger kept one record per load (562 after 500 cycles without a memory budget), and MMS's
per-worker stdout/stderr FIFOs were left in the run directory on ~1/3 of unloads.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import pytest

from sklearn_mme.container import examples
from tests.support import running_serve

pytestmark = pytest.mark.mms

CYCLES = int(os.environ.get("MME_LEFTOVER_CYCLES", "200"))


def fifos(run_dir: Path) -> int:
    return sum(1 for p in run_dir.rglob("*") if stat.S_ISFIFO(p.lstat().st_mode))


@pytest.mark.timeout(900)
def test_load_unload_cycles_leave_no_files(tmp_path: Path, trained: dict) -> None:
    model_dir = examples.write_model_dir(trained["iris_logreg"], tmp_path / "models", "iris")
    with running_serve(tmp_path) as serve:
        run_dir = serve.run_dir()
        ledger = run_dir / "ledger"
        before = (sorted(p.name for p in ledger.iterdir()), fifos(run_dir))
        for i in range(CYCLES):
            name = f"m{i % 3}"
            assert serve.load(name, model_dir).status_code == 200
            assert serve.unload(name).status_code == 200
        # At the last answer only the last worker may still be on its way out (the zygote reaps it).
        at_answer = (len(list(ledger.iterdir())), fifos(run_dir))
        assert at_answer[0] <= len(before[0]) + 1 and at_answer[1] <= before[1] + 2, at_answer
        deadline = time.monotonic() + 5
        while (after := (sorted(p.name for p in ledger.iterdir()), fifos(run_dir))) != before:
            assert time.monotonic() < deadline, (before, after)
            time.sleep(0.1)
