"""Traces (read, generated), the routing policy and the sizing arithmetic, without containers."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from sklearn_mme.harness import sizing
from sklearn_mme.harness.routing import InstanceView, Router
from sklearn_mme.harness.trace import TraceError, generate, read_trace, write_trace

# ---- traces -------------------------------------------------------------------------------------------


def test_csv_trace_is_sorted_and_relative(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("timestamp,TargetModel,body\n1700000002.5,b.tar.gz,\n1700000001,a.tar.gz,\"1,2\"\n")
    trace = read_trace(path)
    assert [(r.at, r.model, r.body) for r in trace] == [(0.0, "a.tar.gz", "1,2"), (1.5, "b.tar.gz", None)]


def test_json_lines_trace_without_timestamps_needs_a_rate(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"TargetModel": m, "body": [1, 2]}) for m in "abc") + "\n")
    with pytest.raises(TraceError, match="rate"):
        read_trace(path)
    trace = read_trace(path, rate=4)
    assert [(r.at, r.model, r.body) for r in trace] == [(0.0, "a", "[1, 2]"), (0.25, "b", "[1, 2]"),
                                                        (0.5, "c", "[1, 2]")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("timestamp,TargetModel\n1,a\n,b\n", "some rows have a timestamp"),
        ("timestamp,TargetModel\nsoon,a\n", "t.csv:2: timestamp 'soon'"),
        ("timestamp,TargetModel\nnan,a\n", "t.csv:2: timestamp"),
        ("timestamp,body\n1,x\n", "t.csv:2: no TargetModel"),
        ("timestamp,TargetModel\n", "no requests"),
        ('{"TargetModel": "a"}\n[1]\n', "t.csv:2: not a JSON object"),
    ],
)
def test_a_bad_trace_is_one_line_naming_the_row(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(text)
    with pytest.raises(TraceError, match=message) as err:
        read_trace(path, rate=1)
    assert "\n" not in str(err.value)


def test_written_trace_reads_back(tmp_path: Path) -> None:
    trace = generate("zipf", ["a", "b", "c"], 50, 10.0, seed=3)
    write_trace(tmp_path / "t.csv", trace)
    again = read_trace(tmp_path / "t.csv")
    assert [(round(r.at, 6), r.model) for r in again] == [(r.at, r.model) for r in trace]


def test_zipf_trace_is_reproducible_and_skewed() -> None:
    models = [f"m{i}" for i in range(50)]
    trace = generate("zipf", models, 2000, 20.0, seed=1)
    assert trace == generate("zipf", models, 2000, 20.0, seed=1)
    assert trace != generate("zipf", models, 2000, 20.0, seed=2)
    counts = Counter(r.model for r in trace)
    # Zipf(1) over 50 models: the first has ~22% of the traffic, the 10th ~2%.
    assert 0.18 < counts["m0"] / 2000 < 0.27
    assert counts["m0"] > 5 * counts["m9"]
    assert trace[0].at == 0 and all(a.at <= b.at for a, b in zip(trace, trace[1:], strict=False))
    assert 80 < trace[-1].at < 120  # 2000 requests at 20/s


def test_bursty_trace_has_bursts_and_diurnal_a_day_shape() -> None:
    bursty = np.diff([r.at for r in generate("bursty", ["a"], 4000, 10.0, seed=0, burst_factor=8)])
    # Gaps inside bursts are ~8x shorter: the gaps' spread is far wider than a Poisson process's.
    assert np.std(bursty) / np.mean(bursty) > 1.3
    day = np.array([r.at for r in generate("diurnal", ["a"], 4000, 10.0, seed=0)])
    quarters = np.histogram(day, bins=4, range=(0, day[-1]))[0]
    # The rate starts at its trough, peaks mid-way, and falls again.
    assert quarters[1] > 2 * quarters[0] and quarters[2] > 2 * quarters[3]


# ---- routing ------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def views(states: list[str | None], inflight: list[int] | None = None,
          models: list[int] | None = None) -> list[InstanceView]:
    n = len(states)
    return [InstanceView(i, states[i], (inflight or [0] * n)[i], (models or [0] * n)[i]) for i in range(n)]


def test_a_request_goes_where_its_model_is_loaded() -> None:
    router = Router(hot_rate=5, clock=Clock())
    assert router.choose("a", views([None, "loaded", None], inflight=[0, 9, 0])) == 1


def test_a_new_model_goes_to_the_least_loaded_instance() -> None:
    router = Router(hot_rate=5, clock=Clock())
    assert router.choose("a", views([None, None, None], inflight=[2, 1, 1], models=[0, 3, 2])) == 2
    # A load under way is joined, not repeated elsewhere.
    assert router.choose("b", views([None, "loading", None])) == 1


def test_a_hot_model_spreads_and_cools_down() -> None:
    clock = Clock()
    router = Router(hot_rate=5, window=1.0, clock=clock)
    chosen = []
    for _ in range(12):  # 12 requests within one second: more than 5/s for one holder
        chosen.append(router.choose("a", views(["loaded", None, None], inflight=[0, 0, 1])))
        clock.now += 0.01
    assert chosen[:5] == [0] * 5 and set(chosen[5:]) == {1}
    # Held on two instances, 12/s is still above 5/s each: a third.
    assert router.choose("a", views(["loaded", "loading", None])) == 2
    clock.now += 2  # the window has passed: quiet again, back to where it is loaded
    assert router.choose("a", views(["loaded", None, None])) == 0


# ---- sizing -------------------------------------------------------------------------------------------


def test_candidates_cheapest_first_and_bad_types_refused() -> None:
    found = sizing.candidates(["ml.m5.large", "ml.t2.medium"], 2, 1024**3)
    assert [c.label for c in found] == ["1 x ml.t2.medium", "2 x ml.t2.medium", "1 x ml.m5.large",
                                        "2 x ml.m5.large"]
    with pytest.raises(sizing.SizingError, match="unknown instance type ml.x9"):
        sizing.candidates(["ml.x9"], 1, 0)
    with pytest.raises(sizing.SizingError, match="not more than the reserve"):
        sizing.candidates(["ml.t2.medium"], 1, 4 * 1024**3)


def _trial(label_type: str, count: int, meets: bool) -> sizing.Trial:
    cand = sizing.Candidate(sizing.INSTANCE_TYPES[label_type], count)
    return sizing.Trial(cand, 1, 10, 0, 1.0, 1.0, 0, 0, meets, "")


def test_pick_is_the_cheapest_that_meets_the_target() -> None:
    # 2 x ml.t2.medium ($0.112/h) is cheaper than 1 x ml.m5.large ($0.115/h); 1 x ml.t2.medium missed.
    trials = [_trial("ml.m5.large", 1, True), _trial("ml.t2.medium", 2, True),
              _trial("ml.t2.medium", 1, False)]
    chosen = sizing.pick(trials)
    assert chosen is not None and chosen.candidate.label == "2 x ml.t2.medium"
    assert sizing.pick([_trial("ml.m5.large", 1, False)]) is None
