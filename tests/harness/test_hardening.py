"""Issue 14, the harness's part, against a real `mme-local serve` (which runs a real container/serve) and real
boto3: a replaced artifact with the same size and mtime (item 4), slow loads that must not starve other loads
(9), Content-Length with Transfer-Encoding (14), a non-ASCII TargetModel (15), a full disk while staging (16),
oversized bodies answered before they are read (17).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests
from botocore.exceptions import ClientError

from sklearn_mme.container import examples
from tests.harness.conftest import expected, predictions, slow_model_dir
from tests.harness_process import RunningHarness, runtime_client, start_harness, stop_harness

pytestmark = pytest.mark.mms

CONSTANT_CODE = """
def predict_fn(data, model):
    return {{"predictions": [{value}] * len(data)}}
"""


def package(model_dir: Path, archive: Path, mode: str = "w:gz") -> Path:
    """A tar.gz of the model directory exactly as it is (no mme-manifest.json, unlike harness.packaging's):
    some tests replace the model file in place, which a manifest's sha256 would then refuse."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, mode) as tar:
        for path in sorted(model_dir.rglob("*")):
            tar.add(path, arcname=path.relative_to(model_dir).as_posix(), recursive=False)
    return archive


def _constant_model(root: Path, ex: examples.Example, name: str, value: int) -> Path:
    """A model answering `value` for every row. Uncompressed (the harness reads any tar), so archives for
    different values have the same size and differ in one byte."""
    model_dir = examples.write_model_dir(ex, root, name)
    (model_dir / "code").mkdir(exist_ok=True)
    (model_dir / "code" / "inference.py").write_text(CONSTANT_CODE.format(value=value))
    return package(model_dir, root / f"{name}.tar.gz", mode="w")


def _csv(ex: examples.Example) -> bytes:
    return "\n".join(",".join(repr(float(v)) for v in row) for row in ex.X).encode()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, trained: dict) -> Path:
    root = tmp_path_factory.mktemp("hardening")
    store = root / "store"
    store.mkdir()
    iris = package(examples.write_model_dir(trained["iris_logreg"], root / "src"), root / "iris.tar.gz")
    shutil.copyfile(iris, store / "iris.tar.gz")
    shutil.copyfile(iris, store / "ü.tar.gz")
    (store / "модели").mkdir()
    shutil.copyfile(iris, store / "модели" / "日本.tar.gz")
    a = _constant_model(root / "src", trained["iris_logreg"], "answer1", 1)
    b = _constant_model(root / "src", trained["iris_logreg"], "answer2", 2)
    assert a.stat().st_size == b.stat().st_size  # the point of item 4: only the content differs
    shutil.copyfile(a, store / "replaced.tar.gz")
    shutil.copyfile(b, root / "next-version.tar.gz")
    return store


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory, store: Path) -> Iterator[RunningHarness]:
    h = start_harness(tmp_path_factory.mktemp("harness"), str(store), "--max-models", "1")
    yield h
    stop_harness(h)


@pytest.fixture(scope="module")
def client(harness: RunningHarness):
    return runtime_client(harness.url, pool=20)


def _raw(url: str, request: bytes, timeout: float = 5.0) -> tuple[bytes, bool]:
    """Send `request` on a fresh connection; (what came back before `timeout`, whether the server closed)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(request)
        data, closed = b"", False
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    closed = True
                    break
                data += chunk
        except TimeoutError:
            pass
    return data, closed


# ---- item 4: the directory store keys the disk cache on content ------------------------------------------


def test_artifact_replaced_with_same_size_and_mtime_is_served_fresh(
    client, harness: RunningHarness, store: Path, trained: dict
) -> None:
    body = _csv(trained["iris_logreg"])
    first = client.invoke_endpoint(EndpointName="e", TargetModel="replaced.tar.gz", Body=body,
                                   ContentType="text/csv")
    assert set(predictions(first["Body"].read())) == {1.0}
    target = store / "replaced.tar.gz"
    new = store.parent / "next-version.tar.gz"
    before = target.stat()
    os.utime(new, ns=(before.st_atime_ns, before.st_mtime_ns))
    subprocess.run(["cp", "-p", str(new), str(target)], check=True)  # keeps the mtime, as rsync -t would
    after = target.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    # --max-models 1: another model evicts it, so the next request loads it again from the artifact cache.
    other = client.invoke_endpoint(EndpointName="e", TargetModel="iris.tar.gz", Body=body,
                                   ContentType="text/csv")
    assert other["ResponseMetadata"]["HTTPStatusCode"] == 200
    assert "replaced.tar.gz" not in [m["model"] for m in harness.info()["loaded"]]
    second = client.invoke_endpoint(EndpointName="e", TargetModel="replaced.tar.gz", Body=body,
                                    ContentType="text/csv")
    assert second["ResponseMetadata"]["HTTPHeaders"]["x-mme-cache"] == "miss"
    assert set(predictions(second["Body"].read())) == {2.0}, "the old artifact was served after replacement"


# ---- item 14: Content-Length together with Transfer-Encoding ---------------------------------------------


def test_content_length_with_chunked_transfer_encoding_is_400(harness: RunningHarness, trained: dict) -> None:
    body = _csv(trained["iris_logreg"])
    head = (
        "POST /endpoints/e/invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        "X-Amzn-SageMaker-Target-Model: iris.tar.gz\r\n"
        f"Content-Length: {len(body)}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    data, closed = _raw(harness.url, head + body + b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b"Content-Length and Transfer-Encoding" in data
    assert data.count(b"HTTP/1.1 ") == 1, "the connection went on after an ambiguous body"
    assert closed


# ---- item 15: TargetModel is UTF-8 -----------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ü.tar.gz", "модели/日本.tar.gz"])
def test_non_ascii_target_model_is_served(client, trained: dict, key: str) -> None:
    ex = trained["iris_logreg"]
    resp = client.invoke_endpoint(EndpointName="e", TargetModel=key, Body=_csv(ex), ContentType="text/csv")
    np.testing.assert_allclose(predictions(resp["Body"].read()), expected(ex))


def test_target_model_that_is_not_utf8_is_400(harness: RunningHarness) -> None:
    data, _ = _raw(
        harness.url,
        b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n"
        b"X-Amzn-SageMaker-Target-Model: \xfc.tar.gz\r\n\r\n1",
    )
    assert data.startswith(b"HTTP/1.1 400 "), data[:200]
    assert b"not valid UTF-8" in data


# ---- item 17: an oversized body is refused from its Content-Length ---------------------------------------


def test_oversized_body_is_answered_413_before_it_is_sent(harness: RunningHarness) -> None:
    head = (
        b"POST /endpoints/e/invocations HTTP/1.1\r\nHost: x\r\nContent-Type: text/csv\r\n"
        b"X-Amzn-SageMaker-Target-Model: iris.tar.gz\r\nContent-Length: 62914560\r\n\r\n"
    )
    t0 = time.monotonic()
    data, _ = _raw(harness.url, head, timeout=3)  # not one byte of the body
    assert data.startswith(b"HTTP/1.1 413 "), f"no 413 within {time.monotonic() - t0:.1f}s: {data[:200]!r}"


def test_oversized_bodies_do_not_grow_the_harness(client, harness: RunningHarness, trained: dict) -> None:
    proc = psutil.Process(harness.proc.pid)
    rss0 = proc.memory_info().rss
    big = b"1" * (60 * 1024 * 1024)
    statuses: list[object] = []
    peak = [rss0]
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], proc.memory_info().rss)

    def send() -> None:
        try:
            r = requests.post(
                f"{harness.url}/endpoints/e/invocations",
                data=big,
                headers={"X-Amzn-SageMaker-Target-Model": "iris.tar.gz", "Content-Type": "text/csv"},
                timeout=60,
            )
            statuses.append(r.status_code)
        except requests.RequestException as err:
            statuses.append(type(err).__name__)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    senders = [threading.Thread(target=send) for _ in range(16)]
    for t in senders:
        t.start()
    for t in senders:
        t.join(90)
    done.set()
    watcher.join(5)
    growth = (peak[0] - rss0) / 2**20
    print(f"\n[hardening] 16 x 60 MB bodies: answers {sorted(map(str, statuses))}; harness RSS "
          f"{rss0 / 2**20:.0f} MB -> peak {peak[0] / 2**20:.0f} MB (+{growth:.0f} MB)")
    assert statuses == [413] * 16
    assert growth < 40, f"the harness grew by {growth:.0f} MB reading bodies it refuses"
    # boto3 sees SageMaker's bare 413 (not a reset connection), and the connection pool still works.
    with pytest.raises(ClientError) as info:
        client.invoke_endpoint(EndpointName="e", TargetModel="iris.tar.gz", Body=big[: 7 * 2**20],
                               ContentType="text/csv")
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 413
    ok = client.invoke_endpoint(EndpointName="e", TargetModel="iris.tar.gz",
                                Body=_csv(trained["iris_logreg"]), ContentType="text/csv")
    assert ok["ResponseMetadata"]["HTTPStatusCode"] == 200


# ---- item 9: slow loads do not starve the loads of other models ------------------------------------------

SLOW_LOADS = 8
SLOW_S = 30
WAIT_LIMIT_S = 12


def test_slow_loads_do_not_block_other_models(tmp_path: Path, trained: dict) -> None:
    ex = trained["iris_logreg"]
    store = tmp_path / "store"
    for i in range(SLOW_LOADS):
        package(slow_model_dir(ex, tmp_path / "src", f"slow{i}", SLOW_S), store / f"slow{i}.tar.gz")
    package(examples.write_model_dir(ex, tmp_path / "src", "fast"), store / "fast.tar.gz")
    h = start_harness(tmp_path, store, "--model-wait-timeout", str(WAIT_LIMIT_S))
    try:
        session = requests.Session()
        slow = [
            threading.Thread(target=lambda i=i: h.invoke(requests.Session(), f"slow{i}.tar.gz", _csv(ex)),
                             daemon=True)
            for i in range(SLOW_LOADS)
        ]
        for t in slow:
            t.start()
        deadline = time.monotonic() + 10
        while sum(m["state"] == "loading" for m in h.info()["loaded"]) < SLOW_LOADS:
            assert time.monotonic() < deadline, h.info()
            time.sleep(0.1)
        t0 = time.monotonic()
        resp = h.invoke(session, "fast.tar.gz", _csv(ex))
        took = time.monotonic() - t0
        print(f"\n[hardening] a fast model with {SLOW_LOADS} loads of {SLOW_S} s under way: "
              f"{resp.status_code} in {took:.1f}s")
        assert resp.status_code == 200, (resp.status_code, resp.text)
        np.testing.assert_allclose(predictions(resp.content), expected(ex))
    finally:
        stop_harness(h)


# ---- item 16: a full disk while staging is the server's condition ----------------------------------------


def _mount_tmpfs(path: Path, size: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}); needs root")


@pytest.fixture
def small_disks(tmp_path: Path) -> Iterator[Path]:
    """A harness work dir whose artifact cache and model directories are 1 MiB tmpfs mounts."""
    work = tmp_path / "work"
    mounts = [work / "artifacts", work / "models"]
    try:
        for m in mounts:
            _mount_tmpfs(m, "1m")
        yield work
    finally:
        for m in mounts:
            subprocess.run(["umount", str(m)], capture_output=True)


def test_full_disk_while_staging_is_500_without_local_paths(
    tmp_path: Path, small_disks: Path, trained: dict
) -> None:
    ex = trained["iris_logreg"]
    store = tmp_path / "store"
    package(examples.write_model_dir(ex, tmp_path / "src", "iris"), store / "iris.tar.gz")
    wide = examples.write_model_dir(ex, tmp_path / "src", "wide")  # small archive, 3 MiB extracted
    (wide / "padding.bin").write_bytes(bytes(3 * 2**20))
    package(wide, store / "wide.tar.gz")
    big = examples.write_model_dir(ex, tmp_path / "src", "big")  # a 2 MiB archive
    (big / "padding.bin").write_bytes(os.urandom(2 * 2**20))
    package(big, store / "big.tar.gz")
    assert (store / "wide.tar.gz").stat().st_size < 512 * 1024

    h = start_harness(tmp_path, store, "--work-dir", str(small_disks))
    try:
        client = runtime_client(h.url)
        for key, stage in (("wide.tar.gz", "extraction"), ("big.tar.gz", "download")):
            with pytest.raises(ClientError) as info:
                client.invoke_endpoint(EndpointName="e", TargetModel=key, Body=_csv(ex),
                                       ContentType="text/csv")
            resp = info.value.response
            message = resp["Error"]["Message"]
            print(f"\n[hardening] full disk during {stage}: {resp['ResponseMetadata']['HTTPStatusCode']} "
                  f"{resp['Error']['Code']}: {message}")
            assert resp["ResponseMetadata"]["HTTPStatusCode"] == 500, (stage, resp)
            assert resp["Error"]["Code"] == "InternalFailure", (stage, resp)
            assert "No space left on device" in message, (stage, message)
            assert str(tmp_path) not in message and "/" not in message.replace(key, ""), (stage, message)
        # Nothing of the failed stagings is left taking the space: a model that fits still loads.
        resp = client.invoke_endpoint(EndpointName="e", TargetModel="iris.tar.gz", Body=_csv(ex),
                                      ContentType="text/csv")
        np.testing.assert_allclose(predictions(resp["Body"].read()), expected(ex))
    finally:
        stop_harness(h)

