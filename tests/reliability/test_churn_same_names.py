"""Issue 14's churn test: load / DELETE / invoke of the same few names from 8 threads for 2 minutes on a real
`container/serve`. It must end with no zygote restart, no wrong answer, no request without an answer and no
5xx other than what the README documents (507 when there is no room; none is expected with these tiny models).

Every name's model answers a constant of its own for every row (its predict_fn), so an answer from another
model, or from an earlier registration of a different model under the name, shows as wrong. Each load of a
name uses the same model directory, so a right answer is unambiguous.

MME_CHURN_SAME_NAMES_S overrides the duration (seconds).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import requests

from sklearn_mme.container import examples
from tests.reliability.util import PingWatch, fmt_counter
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

NAMES = 4
THREADS = 8
DURATION_S = float(os.environ.get("MME_CHURN_SAME_NAMES_S", "120"))
REQUEST_TIMEOUT_S = 30  # far above any answer here; a request without an answer by then counts as hung
DOCUMENTED_5XX = {507}  # README: POST /models answers 507 when there is no room

CONSTANT_CODE = """
def predict_fn(data, model):
    return {{"predictions": [{value}] * len(data)}}
"""

# What each operation may answer while other threads load and delete the same name (README, "API").
EXPECTED = {
    "load": {200, 409},  # loaded, or already registered (by another thread, or still on its way out)
    "delete": {200, 404},  # unloaded, or not registered
    "invoke": {200, 404},  # answered, or not loaded (queued requests of a deleted model get 404)
}


def _zygotes(serve: Serve) -> list[int]:
    """The zygote: a direct child of serve (its forked workers share its command line, one level down)."""
    return [
        p.pid
        for p in psutil.Process(serve.proc.pid).children()
        if "sklearn_mme.container.zygote" in " ".join(p.cmdline())
    ]


class _Churn:
    def __init__(self, serve: Serve, dirs: dict[str, Path], row: str) -> None:
        self.serve, self.dirs, self.row = serve, dirs, row
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.counts: Counter = Counter()
        self.bad: list[tuple] = []  # (op, name, status, body)

    def record(self, op: str, name: str, status: object, body: str) -> None:
        with self.lock:
            self.counts[(op, status)] += 1
            if status not in EXPECTED[op]:
                self.bad.append((op, name, status, " ".join(body.split())[:160]))

    def client(self, seed: int) -> None:
        rng = random.Random(seed)
        session = requests.Session()
        url = self.serve.url
        while not self.stop.is_set():
            name = rng.choice(list(self.dirs))
            op = rng.choices(["load", "delete", "invoke"], weights=[2, 1, 4])[0]
            try:
                if op == "load":
                    body = {"model_name": name, "url": str(self.dirs[name])}
                    resp = session.post(f"{url}/models", json=body, timeout=REQUEST_TIMEOUT_S)
                elif op == "delete":
                    resp = session.delete(f"{url}/models/{name}", timeout=REQUEST_TIMEOUT_S)
                else:
                    resp = session.post(f"{url}/models/{name}/invoke", data=self.row,
                                        headers={"Content-Type": "text/csv"}, timeout=REQUEST_TIMEOUT_S)
                    if resp.status_code == 200:
                        want = int(name.removeprefix("churn"))
                        try:
                            right = json.loads(resp.content)["predictions"] == [want]
                        except (ValueError, KeyError, TypeError):
                            right = False
                        if not right:
                            self.record(op, name, "wrong", resp.text)
                            continue
                self.record(op, name, resp.status_code, resp.text)
            except requests.Timeout:
                self.record(op, name, "hung", "")
            except requests.RequestException as err:
                self.record(op, name, type(err).__name__, str(err))


@pytest.mark.timeout(DURATION_S + 240)
def test_churn_load_delete_invoke_same_names(tmp_path: Path, trained: dict) -> None:
    ex = trained["iris_logreg"]
    dirs = {}
    for i in range(NAMES):
        model_dir = examples.write_model_dir(ex, tmp_path / "models", f"churn{i}")
        (model_dir / "code").mkdir()
        (model_dir / "code" / "inference.py").write_text(CONSTANT_CODE.format(value=i))
        dirs[f"churn{i}"] = model_dir
    row = ",".join(repr(float(v)) for v in ex.X[0])

    with running_serve(tmp_path) as serve:
        zygotes = _zygotes(serve)
        assert len(zygotes) == 1, zygotes
        churn = _Churn(serve, dirs, row)
        with PingWatch(serve.url) as ping:
            threads = [threading.Thread(target=churn.client, args=(k,), daemon=True) for k in range(THREADS)]
            for t in threads:
                t.start()
            time.sleep(DURATION_S)
            churn.stop.set()
            for t in threads:
                t.join(REQUEST_TIMEOUT_S + 10)
        zygotes_after = _zygotes(serve)
        log = serve.log()
        alive = serve.proc.poll() is None

    total = sum(churn.counts.values())
    fives = [b for b in churn.bad if isinstance(b[2], int) and b[2] >= 500]
    print(f"\n[churn-same-names] {THREADS} threads x {DURATION_S:.0f}s on {NAMES} names: {total} requests")
    for op in EXPECTED:
        answers = Counter({s: n for (o, s), n in churn.counts.items() if o == op})
        print(f"[churn-same-names]   {op}: {fmt_counter(answers)}")
    print(f"[churn-same-names]   /ping {fmt_counter(ping.results)} (slowest {ping.slowest:.2f}s); zygote "
          f"{zygotes} -> {zygotes_after}; unexpected: {len(churn.bad)}")
    for b in churn.bad[:10]:
        print(f"[churn-same-names]     {b}")

    assert alive, "container/serve exited"
    assert zygotes_after == zygotes and "zygote exited" not in log, (zygotes, zygotes_after)
    assert not [b for b in churn.bad if b[2] == "wrong"], "a model answered for another"
    assert not [b for b in churn.bad if b[2] == "hung"], "requests got no answer"
    assert not [b for b in fives if b[2] not in DOCUMENTED_5XX], fives[:5]
    assert not [b for b in churn.bad if not isinstance(b[2], int)], churn.bad[:5]
    assert churn.counts[("invoke", 200)] > 0 and churn.counts[("load", 200)] > 0
