"""moto's server (all AWS services on one loopback port) for the mme-deploy tests.

`aws_env` is the ONE fixture that points boto3 at it: AWS_ENDPOINT_URL, dummy credentials, and every variable
that could select a real account or endpoint (profiles, role/web-identity, container credentials, per-service
endpoint URLs) removed, for this process and the subprocesses it starts. Nothing here can reach real AWS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import requests
from click.testing import CliRunner, Result

from sklearn_mme.deploy.cli import main
from tests.support import FAKE_AWS, moto_server

REPO = Path(__file__).resolve().parents[2]
MME_DEPLOY = str(REPO / ".venv" / "bin" / "mme-deploy")
REGION = FAKE_AWS["AWS_REGION"]
ACCOUNT = "123456789012"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/sklearn-mme:abc1234"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/sagemaker-mme"
PREFIX = "s3://mme-models/segments/"
UNSET = (
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CA_BUNDLE",
)


@pytest.fixture(scope="module")
def aws_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Start moto's server and force every boto3 client (here and in subprocesses) onto it; yields its URL."""
    with moto_server(tmp_path_factory.mktemp("moto") / "moto.log") as url, pytest.MonkeyPatch.context() as mp:
        for key in [*UNSET, *(k for k in os.environ if k.startswith("AWS_ENDPOINT_URL_"))]:
            mp.delenv(key, raising=False)
        for key, value in {**FAKE_AWS, "AWS_ENDPOINT_URL": url}.items():
            mp.setenv(key, value)
        yield url


@pytest.fixture
def aws(aws_env: str) -> dict:
    """A clean moto (reset before each test) and boto3 clients on it, to read back what mme-deploy made."""
    requests.post(aws_env + "/moto-api/reset", timeout=10).raise_for_status()
    assert os.environ["AWS_ENDPOINT_URL"] == aws_env
    return {
        s: boto3.client(s, region_name=REGION)
        for s in ("sagemaker", "application-autoscaling", "cloudwatch", "sns", "s3")
    }


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    """mme-deploy in-process through click's runner (stdout and stderr apart)."""
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def deploy_args(name: str, *extra: str) -> list[str]:
    return [
        "deploy",
        name,
        "--image-uri",
        IMAGE,
        "--model-data-prefix",
        PREFIX,
        "--role-arn",
        ROLE,
        "--poll-seconds",
        "0.1",
        *extra,
    ]
