"""The built image, run with podman: the SageMaker MME contract over HTTP, non-root, labels, clean stop.

Run with `bash tests/image/run_image_tests.sh` (builds localhost/sklearn-mme:test first).
"""

from __future__ import annotations

import io
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import requests

from .conftest import MODELS_MOUNT, Container, podman

pytestmark = pytest.mark.image

CLASSIFIERS = ("iris_logreg", "wine_pipeline", "cancer_pipeline", "iris_kmeans")


def load(c: Container, name: str, directory: str) -> requests.Response:
    return requests.post(f"{c.url}/models", json={"model_name": name, "url": directory}, timeout=120)


def predictions_of(resp: requests.Response) -> np.ndarray:
    body = resp.json()
    if isinstance(body, dict):
        body = body["predictions"]
    return np.asarray(body)


def to_csv(X: np.ndarray) -> str:
    buf = io.StringIO()
    np.savetxt(buf, X, delimiter=",", fmt="%.17g")
    return buf.getvalue()


def assert_same_predictions(got: np.ndarray, expected: np.ndarray, example: str) -> None:
    got = got.reshape(expected.shape)
    if example in CLASSIFIERS:
        assert got.tolist() == expected.tolist(), example
    else:
        np.testing.assert_allclose(got.astype(float), expected, rtol=1e-9, atol=1e-9, err_msg=example)


def test_ping_answers_quickly(container: Container) -> None:
    t0 = time.monotonic()
    r = requests.get(f"{container.url}/ping", timeout=2)
    assert r.status_code == 200
    assert time.monotonic() - t0 < 2


def test_mms_plugin_is_loaded(container: Container) -> None:
    """The image carries our MMS plugin (container/java): 404 for requests queued for an unloaded model, the
    in-worker request finishes on unload, unstartable loads get 400."""
    r = requests.get(f"{container.url}/mme", timeout=5)
    assert r.status_code == 200, r.text
    assert r.json()["worker_pool_keep_alive_s"] == 2 and r.json()["process_reaper_keep_alive_s"] == 2, r.text
    assert r.json()["guarded_workload_manager"] is True, r.text


def test_labels_declare_mme_capabilities(image: str) -> None:
    labels = json.loads(podman("image", "inspect", "--format", "{{json .Labels}}", image).stdout)
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"


def test_image_config(image: str) -> None:
    cfg = json.loads(podman("image", "inspect", "--format", "{{json .Config}}", image).stdout)
    assert "8080/tcp" in (cfg.get("ExposedPorts") or {})
    assert cfg["Entrypoint"][0] == "/usr/bin/tini"
    assert cfg.get("User") not in (None, "", "root", "0", "0:0")


def test_tini_is_pid_1_without_init(image: str, model_root) -> None:
    from .conftest import start_container

    c = start_container(image, model_root, init=False)
    try:
        cmdline = podman("exec", c.name, "cat", "/proc/1/cmdline").stdout.split("\0")
        assert cmdline[0] == "/usr/bin/tini", cmdline
    finally:
        podman("rm", "-f", c.name, check=False)


def test_honours_sagemaker_bind_to_port(image: str, model_root) -> None:
    """The image declares accept-bind-to-port: SageMaker may choose the port with SAGEMAKER_BIND_TO_PORT."""
    from .conftest import start_container

    c = start_container(image, model_root, "-e", "SAGEMAKER_BIND_TO_PORT=9090", container_port=9090)
    try:
        assert requests.get(f"{c.url}/ping", timeout=2).status_code == 200
        assert load(c, "iris-9090", f"{MODELS_MOUNT}/iris_logreg").status_code == 200
    finally:
        podman("rm", "-f", c.name, check=False)


def test_pinned_dependencies_are_installed(image: str) -> None:
    import tomllib

    from .conftest import REPO

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = dict(d.replace(" ", "").split("==") for d in deps)
    script = (
        "import importlib.metadata as m, json, sys; "
        "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))"
    )
    out = podman("run", "--rm", image, "python3", "-c", script, *pins).stdout
    assert json.loads(out) == pins


def test_build_ca_is_not_in_the_image(image: str) -> None:
    """The host CA bundle is a build-time mount: podman leaves only the empty mount point behind."""
    r = podman(
        "run",
        "--rm",
        image,
        "sh",
        "-c",
        "find / -xdev -name host-ca.crt -size +0 2>/dev/null; "
        "ls /etc/pip.conf /opt/venv/pip.conf 2>/dev/null; "
        "env | grep -i -e PIP_CERT -e CAInfo; grep -rl host-ca /etc/apt 2>/dev/null; true",
    )
    assert r.stdout.strip() == "", r.stdout


def test_runs_as_non_root(container: Container) -> None:
    uid = podman("exec", container.name, "id", "-u").stdout.strip()
    assert uid != "0"
    # Every process in the container (tini, serve, Java, Python workers) runs as that user.
    script = (
        "import os\n"
        "for p in os.listdir('/proc'):\n"
        "    if p.isdigit():\n"
        "        try:\n"
        "            s = open(f'/proc/{p}/status').read()\n"
        "        except OSError:\n"
        "            continue\n"
        "        uid = [l.split()[1] for l in s.splitlines() if l.startswith('Uid:')][0]\n"
        "        name = [l.split()[1] for l in s.splitlines() if l.startswith('Name:')][0]\n"
        "        print(p, uid, name)\n"
    )
    procs = podman("exec", container.name, "python3", "-c", script).stdout.split()
    rows = [procs[i : i + 3] for i in range(0, len(procs), 3)]
    assert rows, "no processes listed"
    assert any(name == "java" for _, _, name in rows), rows
    assert all(uid != "0" for _, uid, _ in rows), rows


@pytest.mark.parametrize(
    "path",
    ["/opt/program", "/opt/program/sklearn_mme/container", "/opt/venv", "/opt/venv/lib", MODELS_MOUNT,
     "/usr/local"],
)
def test_cannot_write_outside_its_working_dirs(container: Container, path: str) -> None:
    r = podman("exec", container.name, "sh", "-c", f"touch {path}/probe", check=False)
    assert r.returncode != 0, f"the server user can write to {path}"


def test_can_write_its_temp_dir(container: Container) -> None:
    r = podman(
        "exec", container.name, "sh", "-c", 'touch "$TMPDIR/probe" && rm "$TMPDIR/probe" && echo "$TMPDIR"'
    )
    assert r.stdout.strip()


def test_only_serving_code_ships(image: str) -> None:
    """The image runs the container, nothing else: no harness, bench, tests, Java or C sources, no boto3."""
    script = (
        "cd /opt/program; find . -name '*.java' -o -name '*.c' -o -name build_native.sh -o -name harness"
        " -o -name bench -o -name tests -o -name deploy | sort; ls sklearn_mme; "
        "python3 -c 'import importlib.util as u; print([m for m in (\"boto3\", \"botocore\", "
        "\"sagemaker_inference\", \"click\") if u.find_spec(m)])'"
    )
    lines = podman("run", "--rm", image, "sh", "-c", script).stdout.split()
    assert lines == ["container", "handler", "[]"], lines
    listing = podman("run", "--rm", image, "ls", "/opt/program/sklearn_mme/container/lib").stdout.split()
    assert sorted(listing) == ["mme-launcher", "mme-mms-plugin.jar"]


def test_no_compilers_or_pip_caches(container: Container) -> None:
    r = podman(
        "exec",
        container.name,
        "sh",
        "-c",
        "for t in gcc cc g++ make pip pip3 javac; do command -v $t; done; "
        "ls -d /root/.cache/pip /home/*/.cache/pip 2>/dev/null; "
        "ls /var/lib/apt/lists | grep -v -e '^lock$' -e '^partial$'; true",
        check=False,
    )
    assert r.stdout.strip() == "", r.stdout


@pytest.mark.parametrize("example", ["iris_logreg", "diabetes_ridge", "wine_pipeline", "iris_kmeans"])
def test_load_invoke_list_describe_delete(container: Container, examples, example: str) -> None:
    ex = examples[example]
    name = f"{example}-lifecycle"
    r = load(container, name, f"{MODELS_MOUNT}/{example}")
    assert r.status_code == 200, r.text

    expected = ex.model.predict(ex.X)
    r = requests.post(
        f"{container.url}/models/{name}/invoke",
        data=to_csv(ex.X),
        headers={"Content-Type": "text/csv", "Accept": "application/json"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert_same_predictions(predictions_of(r), expected, example)

    r = requests.post(
        f"{container.url}/models/{name}/invoke",
        data=json.dumps({"instances": ex.X.tolist()}),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert_same_predictions(predictions_of(r), expected, example)

    listed = requests.get(f"{container.url}/models", timeout=10)
    assert listed.status_code == 200
    assert name in [m["modelName"] for m in listed.json()["models"]]

    described = requests.get(f"{container.url}/models/{name}", timeout=10)
    assert described.status_code == 200
    assert name in described.text

    r = requests.delete(f"{container.url}/models/{name}", timeout=60)
    assert r.status_code == 200, r.text
    assert requests.get(f"{container.url}/models/{name}", timeout=10).status_code == 404
    r = requests.post(
        f"{container.url}/models/{name}/invoke",
        data=to_csv(ex.X),
        headers={"Content-Type": "text/csv"},
        timeout=60,
    )
    assert r.status_code == 404
    names = [m["modelName"] for m in requests.get(f"{container.url}/models", timeout=10).json()["models"]]
    assert name not in names


def test_second_load_of_a_loaded_model_is_409(container: Container) -> None:
    name = "iris-twice"
    assert load(container, name, f"{MODELS_MOUNT}/iris_logreg").status_code == 200
    try:
        assert load(container, name, f"{MODELS_MOUNT}/iris_logreg").status_code == 409
    finally:
        requests.delete(f"{container.url}/models/{name}", timeout=60)


def test_load_of_a_missing_path_is_404(container: Container) -> None:
    r = load(container, "nothing-there", f"{MODELS_MOUNT}/does-not-exist")
    assert r.status_code == 404, r.text
    names = [m["modelName"] for m in requests.get(f"{container.url}/models", timeout=10).json()["models"]]
    assert "nothing-there" not in names


def test_load_of_a_directory_the_server_cannot_read_is_400_at_once(
    container: Container, model_root: Path, examples
) -> None:
    """A model directory uid 1000 cannot enter: MMS alone held the load a minute, answered 500 and left the
    name registered without workers; our plugin refuses it at once."""
    from sklearn_mme.container.examples import write_model_dir

    locked = write_model_dir(examples["iris_logreg"], model_root, "locked-by-root")
    locked.chmod(0o700)  # owned by the host's root, so the container's user may not enter it
    try:
        t0 = time.monotonic()
        r = load(container, "locked", f"{MODELS_MOUNT}/locked-by-root")
        took = time.monotonic() - t0
    finally:
        shutil.rmtree(locked)
    assert r.status_code == 400 and "can read" in r.json()["message"], (r.status_code, r.text)
    assert took < 10, took
    names = [m["modelName"] for m in requests.get(f"{container.url}/models", timeout=10).json()["models"]]
    assert "locked" not in names
    assert load(container, "after-locked", f"{MODELS_MOUNT}/iris_logreg").status_code == 200
    requests.delete(f"{container.url}/models/after-locked", timeout=60)


def test_invoke_of_a_model_not_loaded_is_404(container: Container) -> None:
    r = requests.post(
        f"{container.url}/models/never-loaded/invoke",
        data="1,2,3,4",
        headers={"Content-Type": "text/csv"},
        timeout=30,
    )
    assert r.status_code == 404


def test_stops_within_10_s_on_sigterm(fresh_container: Container, examples) -> None:
    """`podman stop -t 10`: SIGTERM, then SIGKILL after 10 s. It must not come to the SIGKILL."""
    c = fresh_container
    # With a model loaded, so Python workers run too.
    assert load(c, "iris-stop", f"{MODELS_MOUNT}/iris_logreg").status_code == 200
    t0 = time.monotonic()
    podman("stop", "-t", "10", c.name, timeout=60)
    elapsed = time.monotonic() - t0
    state = c.state()
    assert state.get("Status") == "exited", state
    assert elapsed < 10, f"podman stop took {elapsed:.1f} s (SIGKILL after 10 s); logs:\n{c.logs()[-3000:]}"
    assert state.get("ExitCode") != 137, state
