"""build_and_push.sh for real with podman: builds the image and pushes it to a local `dir:` destination.

Only `aws` is faked (account, region, repository, password) and podman's `login` is a no-op; the build is
the real one (on the registry-free base) and the push is a real `podman push` whose ECR destination is
redirected to `dir:`, so the pushed image can be checked blob by blob.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .test_build_and_push import ACCOUNT, FAKE_AWS, SCRIPT

pytestmark = pytest.mark.image

PODMAN_WRAPPER = r"""#!/bin/sh
# podman, except: `login` is a no-op (no registry here) and `push IMAGE` goes to dir:$PUSH_DIR.
printf 'podman %s\n' "$*" >> "$FAKE_LOG"
case "$1" in
  login) cat >/dev/null; echo "Login Succeeded!"; exit 0 ;;
  push) shift; exec "$REAL_PODMAN" push "$@" "dir:$PUSH_DIR" ;;
  *) exec "$REAL_PODMAN" "$@" ;;
esac
"""


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_build_and_push_to_a_local_destination(tmp_path: Path, image: str) -> None:
    real_podman = shutil.which("podman")
    assert real_podman
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "aws").write_text(FAKE_AWS)
    (bindir / "podman").write_text(PODMAN_WRAPPER)
    for tool in ("aws", "podman"):
        (bindir / tool).chmod(0o755)
    push_dir = tmp_path / "pushed"

    base = os.environ.get("MME_BASE_IMAGE", "localhost/bookworm-base")
    build_args = f"--build-arg BASE_IMAGE={base} --network host"
    host_ca = os.environ.get("MME_HOST_CA", "/etc/ssl/certs/ca-certificates.crt")
    if Path(host_ca).is_file():
        build_args += f" -v {host_ca}:/run/host-ca.crt:ro --build-arg BUILD_CA_CERT=/run/host-ca.crt"
    env = {
        **os.environ,
        "PATH": f"{bindir}:{os.environ['PATH']}",
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_ACCOUNT": ACCOUNT,
        "AWS_REGION": "us-west-2",
        "CONTAINER_CLI": "podman",
        "REAL_PODMAN": real_podman,
        "PUSH_DIR": str(push_dir),
        "BUILD_ARGS": build_args,
    }
    uri = f"{ACCOUNT}.dkr.ecr.us-west-2.amazonaws.com/sklearn-mme:push-test"
    try:
        r = subprocess.run(
            ["bash", str(SCRIPT), "sklearn-mme", "push-test"],
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert r.returncode == 0, r.stderr[-5000:]
        assert r.stdout.strip().splitlines()[-1] == uri

        log = (tmp_path / "calls.log").read_text().splitlines()
        assert [c.split()[1] for c in log if c.startswith("podman ")] == ["login", "build", "push"]

        # The pushed image is complete: manifest, config and every layer, with matching digests and sizes.
        manifest = json.loads((push_dir / "manifest.json").read_text())
        assert manifest["mediaType"] == "application/vnd.docker.distribution.manifest.v2+json"
        blobs = [manifest["config"], *manifest["layers"]]
        assert len(manifest["layers"]) >= 3
        for blob in blobs:
            algo, hexdigest = blob["digest"].split(":")
            path = push_dir / hexdigest
            assert algo == "sha256" and path.is_file(), f"missing blob {blob['digest']}"
            assert path.stat().st_size == blob["size"]
            assert sha256_of(path) == hexdigest
        config = json.loads((push_dir / manifest["config"]["digest"].split(":")[1]).read_text())
        assert config["os"] == "linux" and config["architecture"] == "amd64"
        assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"])
        labels = config["config"]["Labels"]
        assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"
        assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
        assert "8080/tcp" in config["config"]["ExposedPorts"]
        assert config["config"]["Entrypoint"][0] == "/usr/bin/tini"
        assert config["config"]["User"] == "model-server"
        # The same dependency layers as the image the contract tests ran (base, apt, Java, venv: cache hits);
        # the code layers on top may differ if the work tree changed between the two builds.
        tested = json.loads(
            subprocess.run(
                [real_podman, "image", "inspect", image], capture_output=True, text=True, check=True
            ).stdout
        )[0]
        assert len(config["rootfs"]["diff_ids"]) == len(tested["RootFS"]["Layers"])
        assert config["rootfs"]["diff_ids"][:4] == tested["RootFS"]["Layers"][:4]
    finally:
        subprocess.run([real_podman, "rmi", uri], capture_output=True)
