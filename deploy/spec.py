"""What a deploy asks for, checked before any API call: a bad value is one line and exit status 2."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

import click

# SageMaker resource names: alphanumerics and hyphens, <= 63 characters. The model and the endpoint
# config are named NAME-<8 hex digits>, so NAME itself gets 9 fewer.
NAME_RE = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$")
MAX_NAME = 63 - 9
S3_PREFIX_RE = re.compile(r"^s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])/([^\s]*/)?$")
# ACCOUNT.dkr.ecr[-fips].REGION.<aws domain>/REPOSITORY(:TAG|@sha256:DIGEST)
ECR_URI_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr(-fips)?\.(?P<region>[a-z]{2}(-[a-z]+)+-\d)\.amazonaws\.com(\.cn)?"
    r"/(?P<repo>[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*)*)"
    r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$"
)
ROLE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}$")
SNS_ARN_RE = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")
INSTANCE_TYPE_RE = re.compile(r"^ml\.[a-z0-9-]+\.[a-z0-9]+$")
ENV_KEY_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]{0,1023}$")

OWNER_TAG = "mme-deploy:endpoint"
VARIANT = "AllTraffic"


class InputError(click.ClickException):
    """Bad input: `Error: <message>` on one line, exit status 2 (click's usage-error status)."""

    exit_code = 2


@dataclass(frozen=True)
class Scaling:
    # AWS's documented example policy for SageMaker variants (target 70 invocations per instance per minute).
    min_instances: int = 1
    max_instances: int = 4
    target_invocations: float = 70.0
    scale_in_cooldown: int = 600
    scale_out_cooldown: int = 300


@dataclass(frozen=True)
class Alarms:
    loading_wait_ms: float = (
        5000.0  # ModelLoadingWaitTime average above this (CloudWatch reports microseconds)
    )
    cache_hit_min: float = 0.8  # ModelCacheHit average below this: models are thrashing in and out
    errors_5xx: int = 1  # Invocation5XXErrors sum at or above this per period
    memory_percent: float = 85.0  # MemoryUtilization average above this
    period: int = 300
    evaluation_periods: int = 3
    sns_topic_arn: str | None = None


@dataclass(frozen=True)
class DeploySpec:
    name: str
    image_uri: str
    model_data_prefix: str
    role_arn: str
    instance_type: str = "ml.m5.large"
    instance_count: int = 1
    environment: dict[str, str] = field(default_factory=dict)
    scaling: Scaling | None = Scaling()
    alarms: Alarms | None = Alarms()

    def model_def(self) -> dict:
        return {
            "ExecutionRoleArn": self.role_arn,
            "PrimaryContainer": {
                "Image": self.image_uri,
                "Mode": "MultiModel",
                "ModelDataUrl": self.model_data_prefix,
                "Environment": dict(sorted(self.environment.items())),
            },
        }

    @property
    def model_name(self) -> str:
        return f"{self.name}-{short_hash(self.model_def())}"

    def variants(self) -> list[dict]:
        return [
            {
                "VariantName": VARIANT,
                "ModelName": self.model_name,
                "InstanceType": self.instance_type,
                "InitialInstanceCount": self.instance_count,
            }
        ]

    @property
    def config_name(self) -> str:
        return f"{self.name}-{short_hash(self.variants())}"

    @property
    def tags(self) -> list[dict]:
        return [{"Key": OWNER_TAG, "Value": self.name}]


def short_hash(value: object) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()[:8]


def check_name(name: str) -> str:
    if not NAME_RE.match(name) or len(name) > MAX_NAME:
        raise InputError(
            f"invalid endpoint name {name!r}: letters, digits and hyphens, starting with a letter or digit, "
            f"at most {MAX_NAME} characters"
        )
    return name


def check_image_uri(uri: str | None, region: str | None) -> str:
    if not uri:
        raise InputError("missing --image-uri (the ECR image URI build_and_push.sh prints)")
    m = ECR_URI_RE.match(uri)
    if not m:
        raise InputError(
            f"--image-uri {uri!r} is not an ECR image URI "
            "(ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG)"
        )
    if region and m["region"] != region:
        raise InputError(
            f"--image-uri is in {m['region']} but the deploy region is {region}: "
            "SageMaker pulls images from ECR in its own region"
        )
    return uri


def check_prefix(prefix: str | None) -> str:
    if not prefix:
        raise InputError("missing --model-data-prefix (s3://BUCKET/PREFIX/ holding the model .tar.gz files)")
    if not S3_PREFIX_RE.match(prefix):
        raise InputError(
            f"--model-data-prefix {prefix!r} is not an S3 prefix like s3://BUCKET/PREFIX/ "
            "(a bucket name, and a trailing slash)"
        )
    return prefix


def check_role(arn: str | None) -> str:
    if not arn:
        raise InputError("missing --role-arn (the SageMaker execution role)")
    if not ROLE_ARN_RE.match(arn):
        raise InputError(f"--role-arn {arn!r} is not an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    return arn


def check_instance_type(value: str) -> str:
    if not INSTANCE_TYPE_RE.match(value):
        raise InputError(f"--instance-type {value!r} is not a SageMaker instance type like ml.m5.large")
    return value


def check_env(pairs: tuple[str, ...]) -> dict[str, str]:
    env = {"SAGEMAKER_MULTI_MODEL": "true"}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not ENV_KEY_RE.match(key):
            raise InputError(f"--env {pair!r} is not KEY=VALUE with KEY a variable name")
        env[key] = value
    return env


def check_scaling(
    count: int, lo: int | None, hi: int | None, target: float, scale_in: int, scale_out: int
) -> Scaling:
    lo = 1 if lo is None else lo
    hi = max(4, count, lo) if hi is None else hi
    if lo < 1:
        raise InputError(f"--min-instances {lo} must be at least 1")
    if lo > hi:
        raise InputError(f"--min-instances {lo} is greater than --max-instances {hi}")
    if not lo <= count <= hi:
        raise InputError(f"--instance-count {count} is outside --min-instances {lo} .. --max-instances {hi}")
    if target <= 0:
        raise InputError(f"--target-invocations {target} must be positive")
    if scale_in < 0 or scale_out < 0:
        raise InputError("cool-downs must be zero or more seconds")
    return Scaling(lo, hi, target, scale_in, scale_out)


def check_alarms(
    loading_wait_ms: float,
    cache_hit_min: float,
    errors_5xx: int,
    memory_percent: float,
    period: int,
    evaluation_periods: int,
    sns_topic_arn: str | None,
) -> Alarms:
    if loading_wait_ms <= 0:
        raise InputError("--alarm-loading-wait-ms must be positive")
    if not 0 < cache_hit_min <= 1:
        raise InputError("--alarm-cache-hit-min must be in (0, 1]: ModelCacheHit is a ratio")
    if errors_5xx < 1:
        raise InputError("--alarm-5xx must be at least 1")
    if not 0 < memory_percent <= 100:
        raise InputError("--alarm-memory-percent must be in (0, 100]")
    if period < 60 or period % 60:
        raise InputError("--alarm-period must be a multiple of 60 seconds")
    if evaluation_periods < 1:
        raise InputError("--alarm-evaluation-periods must be at least 1")
    if sns_topic_arn is not None and not SNS_ARN_RE.match(sns_topic_arn):
        raise InputError(f"--sns-topic-arn {sns_topic_arn!r} is not an SNS topic ARN")
    return Alarms(
        loading_wait_ms, cache_hit_min, errors_5xx, memory_percent, period, evaluation_periods, sns_topic_arn
    )
