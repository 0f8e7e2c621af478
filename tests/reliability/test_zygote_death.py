"""A zygote death costs no request and no reload (issue 14 item 2), on a real `container/serve`.

Workers follow their model's launcher, not the zygote: before, they got PDEATHSIG with the zygote as
parent, so a SIGKILL of the zygote answered the request inside a 2 s predict 500 at once and replaced
all six workers. Now they keep serving, `serve` (a subreaper) adopts and reaps them, and the restarted
zygote serves new loads.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil
import pytest
import requests

from sklearn_mme.container import examples
from tests.support import Serve, model_with_code, running_serve

pytestmark = pytest.mark.mms

ROW = "5.1,3.5,1.4,0.2"
SLOW_ROW = "99,3.5,1.4,0.2"  # predict sleeps 2 s for this one
CODE = """
import os
import time

def predict_fn(data, model):
    if data[0][0] == 99:
        time.sleep(2)
    return {"pid": os.getpid(), "predictions": model.predict(data).tolist()}
"""


def _model(root: Path, trained: dict, name: str) -> Path:
    return model_with_code(examples.write_model_dir(trained["iris_logreg"], root, name), CODE)


def _pid(serve: Serve, name: str) -> int:
    resp = serve.invoke(name, ROW)
    assert resp.status_code == 200, (name, resp.status_code, resp.text)
    return json.loads(resp.text)["pid"]


def _zygote(serve: Serve, workers: tuple[int, ...] = ()) -> psutil.Process:
    """serve's zygote child (`workers`: the old zygote's workers, adopted by serve, share its cmdline)."""
    found = [p for p in psutil.Process(serve.proc.pid).children()
             if "sklearn_mme.container.zygote" in " ".join(p.cmdline()) and p.pid not in workers]
    assert len(found) == 1, found
    return found[0]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("backend", ["zygote", "hosts"])
def test_zygote_sigkill_costs_no_request_and_no_reload(tmp_path: Path, trained: dict, backend: str) -> None:
    """zygote: each model's own worker outlives the zygote. hosts: the host processes do, serving their
    models on (the zygote's copies of their connections die with it)."""
    names = [f"m{i}" for i in range(6)]
    with running_serve(tmp_path, MME_BACKEND=backend) as serve:
        for name in names:
            assert serve.load(name, _model(tmp_path / "models", trained, name)).status_code == 200
        pids = {name: _pid(serve, name) for name in names}
        zygote = _zygote(serve)

        slow: list = []
        url, csv = f"{serve.url}/models/m0/invoke", {"Content-Type": "text/csv"}
        client = threading.Thread(
            target=lambda: slow.append(requests.post(url, data=SLOW_ROW, headers=csv, timeout=60)),
            daemon=True)
        client.start()
        time.sleep(0.7)  # inside the 2 s predict
        t_kill = time.monotonic()
        zygote.kill()
        zygote.wait(10)
        client.join(30)
        slow_s = time.monotonic() - t_kill

        assert len(slow) == 1 and slow[0].status_code == 200, [(r.status_code, r.text) for r in slow]
        assert json.loads(slow[0].text)["pid"] == pids["m0"]
        assert slow_s < 2.0, slow_s  # the predict's own remaining time, not a retry
        # Every model answers at once, from the same worker: nothing was reloaded.
        after = {name: _pid(serve, name) for name in names}
        assert after == pids
        # The old workers are serve's now (a subreaper), not init's.
        assert all(psutil.Process(pid).ppid() == serve.proc.pid for pid in pids.values())

        # A new model loads (the launcher waits for the restarted zygote), and gets a fresh worker.
        t0 = time.monotonic()
        resp = serve.load("fresh", _model(tmp_path / "models", trained, "fresh"))
        load_s = time.monotonic() - t0
        assert resp.status_code == 200, resp.text
        assert _pid(serve, "fresh") not in pids.values()
        new_zygote = _zygote(serve, tuple(pids.values()))
        assert new_zygote.pid != zygote.pid
        assert (serve.run_dir() / "ledger" / "zygote-restarts").read_text().strip() == "1"

        # DELETE still ends an old worker, and serve reaps it (no zombie left); an old host, which serves
        # other models too, drops the model when MMS closes its connection.
        assert serve.unload("m1").status_code == 200
        deadline = time.monotonic() + 5
        if backend == "zygote":
            while psutil.pid_exists(pids["m1"]):
                assert time.monotonic() < deadline, psutil.Process(pids["m1"]).status()
                time.sleep(0.05)
            assert str(pids["m1"]) not in os.listdir(serve.run_dir() / "ledger")
        else:
            while "m1" in serve.model_pids():
                assert time.monotonic() < deadline, "the old host kept the deleted model"
                time.sleep(0.05)
        # A model whose old worker died after the restart gets a new one from the new zygote.
        os.kill(pids["m2"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (resp := serve.invoke("m2", ROW)).status_code != 200:
            assert time.monotonic() < deadline, resp.text
            time.sleep(0.2)
        assert json.loads(resp.text)["pid"] != pids["m2"]
        assert requests.get(f"{serve.url}/ping", timeout=2).status_code == 200
        print(f"\n[zygote-death] in-flight request answered {slow_s:.2f}s after the SIGKILL; "
              f"a new load took {load_s:.2f}s; 6 models kept their workers")
