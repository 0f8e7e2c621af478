"""MLServer as a peer in the bench: its own venv, both configurations, every metric, a readable chart.

Separate from the --quick smoke because the first run creates MLServer's virtualenv (minutes of pip,
cached under ~/.cache/sklearn-mme afterwards); without network that step fails and the test skips.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import mlserver, report

REPO = Path(__file__).resolve().parents[2]
KINDS = ("mlserver", "mlserver-inproc")


@pytest.fixture(scope="module")
def mlserver_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str, Path]:
    try:
        mlserver.ensure_venv(timeout_s=900)
    except RuntimeError as exc:
        pytest.skip(f"MLServer's venv could not be created (no network?): {str(exc)[:300]}")
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--servers", "ours,mlserver,mlserver-inproc",
         "--json", str(out / "result.json"), "--chart", str(out / "pss.png")],
        cwd=REPO, capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 0, f"bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return json.loads((out / "result.json").read_text()), proc.stdout, out / "pss.png"


def test_pins_come_from_pyproject() -> None:
    pins = mlserver.pins()
    assert "mlserver==1.7.1" in pins and "mlserver-sklearn==1.7.1" in pins
    # The models are pickled by our scikit-learn: MLServer's venv gets the very same version.
    import sklearn

    assert f"scikit-learn=={sklearn.__version__}" in pins
    assert mlserver.venv_dir(pins).name == "bench-mlserver-1.7.1"


def test_v2_request_carries_the_exact_floats() -> None:
    body = json.loads(mlserver.v2_request(b"0.1,2.5e-07,-3.0\n4.0,5.0,6.000000000000001"))
    tensor = body["inputs"][0]
    assert tensor["shape"] == [2, 3] and tensor["datatype"] == "FP64"
    assert tensor["data"] == [0.1, 2.5e-07, -3.0, 4.0, 5.0, 6.000000000000001]


@pytest.mark.mms
@pytest.mark.timeout(1500)
def test_mlserver_measured_beside_ours(mlserver_run: tuple[dict, str, Path]) -> None:
    result, stdout, _ = mlserver_run
    for kind in KINDS:
        entry = result["servers"][kind]
        median = entry["median"]
        for key in report.METRIC_KEYS:
            assert math.isfinite(median[key]), (kind, key)
            if key != "unload_vs_idle_pct":
                assert median[key] > 0, (kind, key, median[key])
        assert median["loaded_pss_mb"] > median["idle_pss_mb"] > 20
        for run in entry["repeats"]:
            errors = run["errors"]
            assert errors["wrong_answers"] == errors["interleaved_wrong_answers"] == 0
            assert errors["invoke_errors"] == errors["interleaved_invoke_errors"] == 0
            assert errors["throughput_ok"] > 0 and errors["interleaved_ok"] > 0
            assert run["leftover_processes"] == []
        assert all(v is None or v > 0 for v in result["ratios_vs"][kind].values())
    header = stdout.splitlines()[stdout.splitlines().index("") + 1]
    assert "mlserver" in header and "mlserver-inproc" in header and header.count("ratio") == 2


@pytest.mark.mms
@pytest.mark.timeout(1500)
def test_default_config_has_worker_processes_inproc_has_none(mlserver_run: tuple[dict, str, Path]) -> None:
    result, _, _ = mlserver_run
    default = result["servers"]["mlserver"]["repeats"][0]["processes"]
    inproc = result["servers"]["mlserver-inproc"]["repeats"][0]["processes"]
    assert inproc["idle"] == inproc["loaded"] == 1
    assert default["idle"] > 1  # its pool of inference workers


@pytest.mark.mms
@pytest.mark.timeout(1500)
def test_chart_has_a_curve_per_server(mlserver_run: tuple[dict, str, Path]) -> None:
    result, _, png = mlserver_run
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for kind in ("ours", *KINDS):
        curve = result["servers"][kind]["pss_curve"]
        assert [n for n, _ in curve] == [0, 1, 2, 3]
        assert curve[-1][1] > curve[0][1] > 0
