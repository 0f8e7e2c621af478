"""The bench's own arithmetic and the reference's user script, without servers."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest

from bench import report
from bench.models import INFERENCE_PY, make_models


def test_percentile_interpolates() -> None:
    assert report.percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert report.percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert report.percentile([7.0], 99) == 7.0


def test_ratio_is_above_one_when_ours_is_better() -> None:
    by_key = {m.key: m for m in report.METRICS}
    assert report.ratio(by_key["cold_load_p50_ms"], ours=50.0, vanilla=1000.0) == 20.0
    assert report.ratio(by_key["pss_per_model_mb"], ours=10.0, vanilla=90.0) == 9.0
    assert report.ratio(by_key["throughput_rps"], ours=600.0, vanilla=300.0) == 2.0
    assert report.ratio(by_key["unload_vs_idle_pct"], ours=1.0, vanilla=2.0) is None


def test_targets_need_vanilla_for_relative_ones() -> None:
    ours = {"cold_load_p50_ms": 50.0, "pss_per_model_mb": 14.0, "warm_p50_ms": 2.0, "throughput_rps": 500.0,
            "unload_vs_idle_pct": -3.0}
    assert all(t["pass"] is True for t in report.evaluate_targets(ours, dict(ours)).values())
    alone = report.evaluate_targets(ours, None)
    assert alone["warm_p50_ms"]["pass"] is None and alone["cold_load_p50_ms"]["pass"] is True


def test_reference_script_predicts_like_the_model(tmp_path: Path) -> None:
    (model,) = make_models(tmp_path, 1, progress=False)
    script = types.ModuleType("inference")
    exec(compile(INFERENCE_PY, "inference.py", "exec"), script.__dict__)
    loaded = script.model_fn(str(model.vanilla_dir))
    data = script.input_fn(model.body, "text/csv")
    answer = script.output_fn(script.predict_fn(data, loaded), "application/json")
    assert tuple(json.loads(answer)["predictions"]) == model.expected
    assert (model.vanilla_dir / "code" / "inference.py").read_text() == INFERENCE_PY
    assert sorted(p.name for p in model.ours_dir.iterdir()) == ["model.joblib"]
