"""`mme-local demo`: the example models behind a harness with little room, so loads and evictions happen.

Trains container/examples.py's models, packages them into a temporary directory store, starts the harness
with the process runtime and a small --max-models, sends round-robin traffic and a cold burst through boto3,
checks every prediction against the same model's in-process predict, and prints what happened.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sklearn_mme.harness import container_metrics, scenario
from sklearn_mme.harness.app import Harness, HarnessConfig
from sklearn_mme.harness.container import free_port
from sklearn_mme.harness.packaging import package

# Nested keys show that TargetModel is a path relative to the store.
KEYS = {
    "iris_logreg": "iris_logreg.tar.gz",
    "diabetes_ridge": "diabetes_ridge.tar.gz",
    "wine_pipeline": "segments/wine_pipeline.tar.gz",
    "cancer_pipeline": "segments/cancer_pipeline.tar.gz",
    "iris_kmeans": "region/eu/iris_kmeans.tar.gz",
}


def predictions_from(body: bytes) -> list:
    """The predictions in a JSON answer: `{"predictions": [...]}` or a bare list."""
    data = json.loads(body)
    if isinstance(data, dict):
        data = data.get("predictions", data)
    return data


def same_predictions(body: bytes, expected: np.ndarray) -> bool:
    try:
        got = np.asarray(predictions_from(body), dtype=float).reshape(-1)
    except (ValueError, TypeError):
        return False
    want = np.asarray(expected, dtype=float).reshape(-1)
    return got.shape == want.shape and bool(np.allclose(got, want, rtol=1e-6, atol=1e-9))


@dataclass
class _Checker:
    """Compares each answer with the in-process prediction of its model."""

    expected: dict[str, np.ndarray]
    mismatches: list[str] = field(default_factory=list)

    def __call__(self, req: scenario.Request, out: scenario.Outcome) -> None:
        if not out.ok or not same_predictions(out.body, self.expected[req.model]):
            self.mismatches.append(f"{req.model}: {out.error or out.body[:200]!r}")


@dataclass
class _Results:
    rounds: scenario.Report
    burst: scenario.Report
    warm: scenario.Report
    cold_model: str


def _build_store(root: Path, echo: Callable[[str], None]) -> tuple[Path, list[scenario.Request], _Checker]:
    """Train and package the example models into a directory store; the requests and their checker."""
    from sklearn_mme.container import examples

    store = root / "store"
    echo(f"[demo] training {len(KEYS)} example models (scikit-learn's bundled datasets)")
    trained = examples.train_all()
    expected: dict[str, np.ndarray] = {}
    reqs: list[scenario.Request] = []
    for name, key in KEYS.items():
        ex = trained[name]
        package(examples.write_model_dir(ex, root / "src"), store / key)
        expected[key] = ex.model.predict(ex.X)
        reqs.append(scenario.Request(key, json.dumps(ex.X.tolist()).encode(), "application/json"))
    echo(f"[demo] store {store}: " + ", ".join(KEYS.values()))
    return store, reqs, _Checker(expected)


def _drive(
    harness: Harness,
    reqs: list[scenario.Request],
    check: _Checker,
    rounds: int,
    burst: int,
    echo: Callable[[str], None],
) -> _Results:
    """Round-robin traffic, then a cold burst, then warm requests, each checked."""
    plan = scenario.schedule(reqs, rounds, "round-robin")
    echo(f"[demo] phase 1: {len(plan)} round-robin requests over {len(reqs)} models, one at a time")
    report1 = scenario.run(harness.url, plan, concurrency=1, on_outcome=check, progress=sys.stderr.isatty())
    echo(report1.table())
    echo(f"        {report1.seconds:.2f}s, at most {report1.max_loaded} models loaded at once")

    # A burst of concurrent requests for a model that is not loaded: one download, one load.
    assert harness.manager is not None
    loaded = {m["model"] for m in harness.manager.loaded()}
    cold = next(r for r in reqs if r.model not in loaded)
    echo(f"[demo] phase 2: {burst} concurrent requests for {cold.model} while it is not loaded")
    report2 = scenario.run(harness.url, [cold] * burst, concurrency=burst, on_outcome=check, progress=False)
    echo(report2.table())

    # Warm latency: the same loaded model again and again.
    warm = scenario.run(harness.url, [cold] * 50, concurrency=1, on_outcome=check, progress=False)
    return _Results(report1, report2, warm, cold.model)


def _summary(results: _Results, check: _Checker, max_models: int, echo: Callable[[str], None]) -> bool:
    """Print what happened; True when every answer matched and the limits held."""
    report1, report2, warm = results.rounds, results.burst, results.warm
    cold_ms = 1000 * max(o.seconds for o in report2.outcomes)
    warm_ms = 1000 * sorted(o.seconds for o in warm.outcomes)[len(warm.outcomes) // 2]
    row = report2.rows[results.cold_model]
    total = len(report1.outcomes) + len(report2.outcomes) + len(warm.outcomes)
    echo("")
    echo("[demo] summary")
    echo(
        f"  requests          {total}, answers matching in-process predict: "
        f"{total - len(check.mismatches)}/{total}"
    )
    echo(
        f"  phase 1           loads {report1.totals.loads}, "
        f"unloads (evictions) {report1.totals.unloads}, "
        f"hits {report1.totals.hits}, misses {report1.totals.misses}; max loaded "
        f"{report1.max_loaded} (limit {max_models})"
    )
    echo(
        f"  phase 2 burst     {row.requests} misses -> downloads {row.downloads}, loads {row.loads}; "
        f"slowest request {cold_ms:.0f} ms"
    )
    echo(f"  warm invoke p50   {warm_ms:.1f} ms through boto3 -> harness -> container")
    for line in check.mismatches[:10]:
        echo(f"  MISMATCH {line}")
    return not check.mismatches and report1.max_loaded <= max_models and row.loads == 1


def run_demo(
    max_models: int = 2, rounds: int = 3, burst: int = 20, echo: Callable[[str], None] = print
) -> bool:
    """Run the demo; True when every answer matched the in-process prediction."""
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mme-local-demo-") as tmp:
        store, reqs, check = _build_store(Path(tmp), echo)
        config = HarnessConfig(model_store=str(store), port=free_port(), max_models=max_models, wait_limit=60)
        echo(f"[demo] starting the harness (process runtime, --max-models {max_models}) ...")
        with Harness(config) as harness:
            echo(f"[demo] harness on {harness.url}, container: {harness.runtime.describe()}")
            results = _drive(harness, reqs, check, rounds, burst, echo)
            ok = _summary(results, check, max_models, echo)
            echo("[demo] per model, from the container's own GET /metrics")
            for line in container_metrics.table(container_metrics.scrape(harness.client.base_url)):
                echo(line)
        echo(
            f"[demo] {'OK' if ok else 'FAILED'} in {time.perf_counter() - t_start:.1f}s; "
            "harness and container stopped"
        )
        return ok
