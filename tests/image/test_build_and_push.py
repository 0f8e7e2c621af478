"""build_and_push.sh with fake `aws` and container CLIs on PATH that record their calls.

Runs in the default test run (no podman, no AWS). The real build-and-push to a local destination is
test_push_to_a_local_destination, an `image` test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "build_and_push.sh"
ACCOUNT = "123456789012"

# Tools the script (and git) may need; everything else, notably real aws/docker/podman, stays off PATH.
SYSTEM_TOOLS = [
    "bash",
    "sh",
    "env",
    "cat",
    "dirname",
    "git",
    "uname",
    "id",
    "sed",
    "grep",
    "ls",
    "rm",
    "mkdir",
]

FAKE_AWS = r"""#!/bin/sh
# Fake aws CLI: records its argv, answers like the real one.
printf 'aws %s\n' "$*" >> "$FAKE_LOG"
case "$1 $2" in
  "sts get-caller-identity")
    if [ -n "$FAKE_STS_FAIL" ]; then
      echo "Unable to locate credentials. You can configure credentials by running \"aws configure\"." >&2
      exit 255
    fi
    echo "$FAKE_ACCOUNT" ;;
  "configure get")
    [ -n "$FAKE_CONFIG_REGION" ] || exit 1
    echo "$FAKE_CONFIG_REGION" ;;
  "ecr describe-repositories")
    if [ -n "$FAKE_REPO_MISSING" ]; then
      echo "An error occurred (RepositoryNotFoundException) when calling DescribeRepositories" >&2
      exit 254
    fi
    echo '{"repositories": [{"repositoryName": "x"}]}' ;;
  "ecr create-repository") echo '{"repository": {}}' ;;
  "ecr get-login-password") printf 'fake-ecr-password' ;;
  *) echo "fake aws: unexpected call: $*" >&2; exit 2 ;;
esac
"""

FAKE_CLI = r"""#!/bin/sh
# Fake container CLI (docker or podman): records its argv (and a login's stdin).
name=$(basename "$0")
# A login reads the password first: the pipe's writer (aws) has then run and logged, so the order is stable.
if [ "$1" = login ]; then password=$(cat); fi
printf '%s %s\n' "$name" "$*" >> "$FAKE_LOG"
case "$1" in
  login) printf '%s login-stdin %s\n' "$name" "$password" >> "$FAKE_LOG" ;;
  build) [ -z "$FAKE_BUILD_FAIL" ] || exit 1 ;;
esac
exit 0
"""


def make_bin(tmp_path: Path, fakes: tuple[str, ...] = ("aws", "docker")) -> Path:
    fake = tmp_path / "bin"
    fake.mkdir()
    for tool in SYSTEM_TOOLS:
        found = shutil.which(tool)
        if found and not (fake / tool).exists():
            (fake / tool).symlink_to(found)
    for tool in fakes:
        (fake / tool).write_text(FAKE_AWS if tool == "aws" else FAKE_CLI)
        (fake / tool).chmod(0o755)
    (fake / "basename").symlink_to(shutil.which("basename"))
    return fake


def run(
    tmp_path: Path, *args: str, fakes=("aws", "docker"), env: dict | None = None, context: Path | None = None
) -> subprocess.CompletedProcess:
    bindir = tmp_path / "bin"
    if not bindir.exists():
        make_bin(tmp_path, fakes)
    full_env = {
        "PATH": str(bindir),
        "HOME": str(tmp_path),
        "FAKE_LOG": str(tmp_path / "calls.log"),
        "FAKE_ACCOUNT": ACCOUNT,
        "AWS_REGION": "eu-west-1",
        "BUILD_CONTEXT": str(context or REPO),
    }
    full_env.update(env or {})
    full_env = {k: v for k, v in full_env.items() if v is not None}
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args], env=full_env, capture_output=True, text=True, timeout=60
    )


def calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def kinds(tmp_path: Path) -> list[str]:
    """The calls reduced to tool + subcommand(s), in order."""
    out = []
    for line in calls(tmp_path):
        words = line.split()
        if words[0] == "aws":
            out.append(" ".join(words[:3]))
        elif words[1] == "buildx":
            continue
        else:
            out.append(" ".join(words[:2]))
    return out


def test_calls_in_order_when_the_repository_exists(tmp_path: Path) -> None:
    r = run(tmp_path, "sklearn-mme", "v1")
    assert r.returncode == 0, r.stderr
    uri = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/sklearn-mme:v1"
    assert r.stdout.splitlines()[-1] == uri
    assert r.stdout.strip() == uri  # stdout is only the URI: IMAGE_URI=$(./build_and_push.sh ...)
    assert kinds(tmp_path) == [
        "aws sts get-caller-identity",
        "aws ecr describe-repositories",
        "aws ecr get-login-password",
        "docker login",
        "docker login-stdin",
        "docker build",
        "docker push",
    ]
    log = calls(tmp_path)
    assert "aws sts get-caller-identity --query Account --output text" in log
    assert "aws ecr describe-repositories --repository-names sklearn-mme --region eu-west-1" in log
    assert "aws ecr get-login-password --region eu-west-1" in log
    login = next(c for c in log if c.startswith("docker login "))
    assert login == f"docker login --username AWS --password-stdin {ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com"
    assert "docker login-stdin fake-ecr-password" in log  # the password goes through stdin, never argv
    build = next(c for c in log if c.startswith("docker build ")).split()
    assert build[build.index("--platform") + 1] == "linux/amd64"
    assert build[build.index("-t") + 1] == uri
    assert build[-1] == str(REPO)
    assert f"docker push {uri}" in log
    assert not any("create-repository" in c for c in log)


def test_creates_the_repository_only_when_missing(tmp_path: Path) -> None:
    r = run(tmp_path, "team/churn-models", "2024-06-01", env={"FAKE_REPO_MISSING": "1"})
    assert r.returncode == 0, r.stderr
    seq = kinds(tmp_path)
    assert (
        seq.index("aws ecr describe-repositories")
        < seq.index("aws ecr create-repository")
        < seq.index("aws ecr get-login-password")
        < seq.index("docker build")
        < seq.index("docker push")
    )
    create = next(c for c in calls(tmp_path) if "create-repository" in c)
    assert create == (
        "aws ecr create-repository --repository-name team/churn-models "
        "--image-scanning-configuration scanOnPush=true --region eu-west-1"
    )
    assert seq.count("aws ecr create-repository") == 1
    assert (
        r.stdout.splitlines()[-1] == f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/team/churn-models:2024-06-01"
    )


@pytest.mark.parametrize(
    ("env", "region"),
    [
        ({"AWS_REGION": "us-east-2", "AWS_DEFAULT_REGION": "ap-south-1"}, "us-east-2"),
        ({"AWS_REGION": None, "AWS_DEFAULT_REGION": "ap-south-1"}, "ap-south-1"),
        ({"AWS_REGION": None, "FAKE_CONFIG_REGION": "sa-east-1"}, "sa-east-1"),
    ],
)
def test_region_resolution(tmp_path: Path, env: dict, region: str) -> None:
    r = run(tmp_path, "m", "t", env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"{ACCOUNT}.dkr.ecr.{region}.amazonaws.com/m:t"
    asked_config = any(c.startswith("aws configure get region") for c in calls(tmp_path))
    assert asked_config == ("FAKE_CONFIG_REGION" in env)


def test_no_region_is_a_clear_error(tmp_path: Path) -> None:
    r = run(tmp_path, "m", "t", env={"AWS_REGION": None})
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1].startswith("build_and_push.sh: error: no AWS region")
    assert not any(c.startswith(("docker", "aws ecr")) for c in calls(tmp_path))


def test_podman_via_container_cli(tmp_path: Path) -> None:
    r = run(tmp_path, "m", "t", fakes=("aws", "docker", "podman"), env={"CONTAINER_CLI": "podman"})
    assert r.returncode == 0, r.stderr
    seq = kinds(tmp_path)
    assert "podman build" in seq and "podman push" in seq and "podman login" in seq
    assert not any(k.startswith("docker") for k in seq)
    build = next(c for c in calls(tmp_path) if c.startswith("podman build ")).split()
    assert build[build.index("--format") + 1] == "docker"  # a Docker v2 manifest for SageMaker


def test_default_cli_is_docker_else_podman(tmp_path: Path) -> None:
    r = run(tmp_path, "m", "t", fakes=("aws", "podman"))
    assert r.returncode == 0, r.stderr
    assert "podman push" in kinds(tmp_path)


def test_build_args_from_env(tmp_path: Path) -> None:
    extra = "--build-arg BASE_IMAGE=localhost/bookworm-base --network host"
    r = run(tmp_path, "m", "t", env={"BUILD_ARGS": extra})
    assert r.returncode == 0, r.stderr
    build = next(c for c in calls(tmp_path) if c.startswith("docker build "))
    assert extra in build


def test_default_tag_is_the_git_short_sha(tmp_path: Path, git_repo: Path) -> None:
    sha = subprocess.run(
        ["git", "-C", str(git_repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    r = run(tmp_path, "m", context=git_repo)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/m:{sha}"
    build = next(c for c in calls(tmp_path) if c.startswith("docker build ")).split()
    assert build[-1] == str(git_repo)


def test_dirty_tree_without_tag_is_refused(tmp_path: Path, git_repo: Path) -> None:
    (git_repo / "Dockerfile").write_text("FROM scratch\n# changed\n")
    r = run(tmp_path, "m", context=git_repo)
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "uncommitted changes" in err[0] and "TAG" in err[0], r.stderr
    assert calls(tmp_path) == []  # nothing ran: no AWS call, no build
    # An explicit tag is the way out.
    r = run(tmp_path, "m", "hotfix-1", context=git_repo)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1].endswith("/m:hotfix-1")


def test_missing_aws_cli(tmp_path: Path) -> None:
    r = run(tmp_path, "m", "t", fakes=("docker",))
    assert r.returncode != 0
    assert r.stderr.strip() == "build_and_push.sh: error: aws not found on PATH (install the AWS CLI v2)"
    assert calls(tmp_path) == []


def test_missing_container_cli(tmp_path: Path) -> None:
    r = run(tmp_path, "m", "t", fakes=("aws",))
    assert r.returncode != 0
    assert r.stderr.strip().startswith("build_and_push.sh: error: neither docker nor podman found")
    r = run(tmp_path, "m", "t", fakes=("aws",), env={"CONTAINER_CLI": "podman"})
    assert r.returncode != 0
    assert r.stderr.strip().startswith("build_and_push.sh: error: podman not found on PATH")
    assert calls(tmp_path) == []


def test_missing_credentials(tmp_path: Path) -> None:
    r = run(tmp_path, "m", "t", env={"FAKE_STS_FAIL": "1"})
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert err[-1].startswith("build_and_push.sh: error: no usable AWS credentials"), r.stderr
    assert kinds(tmp_path) == ["aws sts get-caller-identity"]  # stopped before ECR or any build
    assert r.stdout == ""


def test_failed_build_stops_before_push(tmp_path: Path) -> None:
    r = run(tmp_path, "m", "t", env={"FAKE_BUILD_FAIL": "1"})
    assert r.returncode != 0
    assert r.stderr.strip().splitlines()[-1] == "build_and_push.sh: error: the image build failed"
    assert "docker push" not in kinds(tmp_path)
    assert r.stdout == ""


@pytest.mark.parametrize("args", [[], ["a", "b", "c"], ["Bad_Name", "t"], ["m", "bad tag"], ["--nope", "m"]])
def test_usage_errors(tmp_path: Path, args: list[str]) -> None:
    r = run(tmp_path, *args)
    assert r.returncode != 0
    assert "build_and_push.sh: error:" in r.stderr
    assert calls(tmp_path) == []


def test_dry_run_prints_every_command_and_runs_none(tmp_path: Path) -> None:
    r = run(
        tmp_path,
        "--dry-run",
        "sklearn-mme",
        "v2",
        env={"AWS_ACCOUNT_ID": ACCOUNT, "BUILD_ARGS": "--network host"},
    )
    assert r.returncode == 0, r.stderr
    assert calls(tmp_path) == []
    lines = r.stdout.splitlines()
    uri = f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/sklearn-mme:v2"
    registry = uri.split("/")[0]
    assert lines == [
        "aws sts get-caller-identity --query Account --output text",
        "aws ecr describe-repositories --repository-names sklearn-mme --region eu-west-1 || "
        "aws ecr create-repository --repository-name sklearn-mme --image-scanning-configuration "
        "scanOnPush=true --region eu-west-1",
        "aws ecr get-login-password --region eu-west-1 | "
        f"docker login --username AWS --password-stdin {registry}",
        f"docker build --platform linux/amd64 --provenance=false --network host -t {uri} "
        f"-f {REPO}/Dockerfile {REPO}",
        f"docker push {uri}",
        uri,
    ]


def test_dry_run_needs_no_tools_or_credentials(tmp_path: Path) -> None:
    r = run(tmp_path, "--dry-run", "m", "t", fakes=(), env={"AWS_REGION": None, "CONTAINER_CLI": "podman"})
    assert r.returncode == 0, r.stderr
    assert "aws configure get region" in r.stdout.splitlines()
    assert r.stdout.splitlines()[-1] == "ACCOUNT_ID.dkr.ecr.REGION.amazonaws.com/m:t"


def test_shellcheck_clean() -> None:
    scripts = [SCRIPT, REPO / "tests" / "image" / "run_image_tests.sh"]
    for script in scripts:
        subprocess.run(["bash", "-n", str(script)], check=True)
        assert "set -euo pipefail" in script.read_text()
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    r = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """A small clean git repository with a Dockerfile: a stand-in build context."""
    repo = tmp_path / "ctx"
    repo.mkdir()
    (repo / "Dockerfile").write_text("FROM scratch\n")
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    for cmd in (["init", "-q"], ["add", "Dockerfile"], ["commit", "-q", "-m", "init"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True, env=env, capture_output=True)
    return repo
