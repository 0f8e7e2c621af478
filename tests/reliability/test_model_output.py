"""A model's stdout/stderr never slows or kills its requests (issue 14 item 8), on a real `container/serve`.

MMS reads a worker's output line by line (its stdout/stderr FIFOs): before, one 2 MiB line took 13 s to get
through, 256 KiB of latin-1 lines 8 s, and past ~4 MiB the request hit its timeout and got 500 "Worker
died.". A worker's fds 1 and 2 now go to a pipe it drains itself (container/worker_output.py): bounded
lines, decoded as UTF-8 with replacement, dropped with a count when MMS reads too slowly.

Here, before the fix, the 4 MiB lines (stdout, stderr) got 500 after the 20 s response timeout; 256 KiB of
latin-1 in 4 lines took 0.25 s (the issue's 8 s did not reproduce), and a 4 MiB line printed by model_fn
(to the launcher's stdout, which MMS reads faster) did not slow the load. Both stay as guards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from sklearn_mme.container import examples
from tests.support import Serve, running_serve

pytestmark = pytest.mark.mms

RESPONSE_TIMEOUT_S = 20
CODE = """
import os
import sys

LATIN1 = (b"caf\\xe9 cr\\xe8me br\\xfbl\\xe9e " * 2600 + b"\\n") * 4  # ~256 KiB in 4 lines, not UTF-8


def model_fn(model_dir):
    print("z" * (4 << 20), flush=True)  # at load the output goes to the launcher's stdout: also bounded
    import joblib
    return joblib.load(os.path.join(model_dir, "model.joblib"))


def predict_fn(data, model):
    kind = int(data[0][0])
    if kind == 1:
        print("x" * (4 << 20), flush=True)  # one 4 MiB line
    elif kind == 2:
        sys.stdout.buffer.write(LATIN1)
        sys.stdout.flush()
    elif kind == 3:
        os.write(2, b"y" * (4 << 20) + b"\\n" + LATIN1)  # straight to fd 2, unbuffered
    return {"kind": kind, "predictions": model.predict(data).tolist()}
"""


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, trained: dict) -> Iterator[Serve]:
    tmp = tmp_path_factory.mktemp("output")
    model_dir = examples.write_model_dir(trained["iris_logreg"], tmp, "chatty")
    (model_dir / "code").mkdir()
    (model_dir / "code" / "inference.py").write_text(CODE)
    with running_serve(tmp, SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS=str(RESPONSE_TIMEOUT_S)) as server:
        t0 = time.monotonic()
        assert server.load("chatty", model_dir).status_code == 200
        assert time.monotonic() - t0 < 5.0
        yield server


def _invoke(serve: Serve, kind: int) -> tuple[int, float, str]:
    t0 = time.monotonic()
    resp = serve.invoke("chatty", f"{kind},3.5,1.4,0.2")
    return resp.status_code, time.monotonic() - t0, resp.text


@pytest.mark.parametrize("kind", [1, 2, 3], ids=["4MiB-stdout-line", "latin1-stdout", "stderr-both"])
def test_model_output_does_not_slow_its_requests(serve: Serve, kind: int) -> None:
    status, seconds, text = _invoke(serve, kind)
    print(f"\n[output] kind {kind}: {status} in {seconds:.2f}s")
    assert status == 200, text
    assert json.loads(text)["kind"] == kind
    assert seconds < 3.0, seconds  # before: 13 s for 2 MiB, the response timeout (500) past ~4 MiB
    # The worker is still the same and answers the next request at once.
    status, seconds, text = _invoke(serve, 0)
    assert status == 200 and seconds < 1.0, (status, seconds, text)


def test_model_output_reaches_the_log_bounded_and_decoded(serve: Serve) -> None:
    assert _invoke(serve, 2)[0] == 200
    assert _invoke(serve, 1)[0] == 200
    deadline = time.monotonic() + 10
    while "caf\ufffd cr\ufffdme" not in (log := serve.log()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "caf\ufffd cr\ufffdme br\ufffdl\ufffde" in log  # latin-1 bytes decoded with replacement
    assert max(len(line) for line in log.splitlines()) < 8192  # the 4 MiB line arrived in bounded pieces
