"""`mme-deploy`: deploy the MME image as a SageMaker multi-model endpoint, autoscale it, alarm on it, read its
metrics, tear it down. boto3's usual settings apply (credential chain, AWS_ENDPOINT_URL); the region is
AWS_REGION, else AWS_DEFAULT_REGION, else the configured one."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from typing import Any

import click
from botocore.exceptions import BotoCoreError, ClientError

from sklearn_mme.deploy import metrics as metrics_mod
from sklearn_mme.deploy.plan import SERVICES, DeployError, Step, execute, render
from sklearn_mme.deploy.planner import deploy_plan, teardown_plan
from sklearn_mme.deploy.spec import (
    DeploySpec,
    InputError,
    check_alarms,
    check_env,
    check_image_uri,
    check_instance_type,
    check_name,
    check_prefix,
    check_role,
    check_scaling,
)
from sklearn_mme.deploy.state import read_state


def region() -> str | None:
    import boto3

    return (
        os.environ.get("AWS_REGION")
        or os.environ.get("AWS_DEFAULT_REGION")
        or boto3.session.Session().region_name
    )


def clients() -> dict[str, Any]:
    import boto3

    reg = region()
    if not reg:
        raise InputError("no AWS region: set AWS_REGION (or AWS_DEFAULT_REGION, or configure one)")
    session = boto3.session.Session(region_name=reg)
    return {service: session.client(service) for service in SERVICES}


def _aws_errors(f: Callable) -> Callable:
    """AWS failures as one line (exit 1), never a traceback."""

    @wraps(f)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return f(*args, **kwargs)
        except ClientError as err:
            e = err.response.get("Error", {})
            raise click.ClickException(f"{err.operation_name}: {e.get('Code')}: {e.get('Message')}") from None
        except (BotoCoreError, DeployError) as err:
            raise click.ClickException(str(err)) from None

    return run


def _progress(message: str) -> None:
    click.echo(f"[mme-deploy] {message}", err=True)


def _run(plan: list[Step], dry_run: bool, aws: dict[str, Any], poll: float, timeout: float) -> None:
    if dry_run:
        if plan:
            click.echo(render(plan))
        return
    execute(plan, aws, _progress, poll_seconds=poll, wait_timeout=timeout)


@click.group()
def main() -> None:
    """Deploy, autoscale and monitor the sklearn-mme image on SageMaker."""


@main.command()
@click.argument("name")
@click.option("--image-uri", metavar="URI", help="The ECR image URI (build_and_push.sh prints it).")
@click.option("--model-data-prefix", metavar="S3_PREFIX", help="s3://BUCKET/PREFIX/ holding the models.")
@click.option("--role-arn", metavar="ARN", help="The SageMaker execution role.")
@click.option("--instance-type", default="ml.m5.large", show_default=True)
@click.option("--instance-count", type=click.IntRange(min=1), default=1, show_default=True)
@click.option(
    "--env",
    "env",
    multiple=True,
    metavar="KEY=VALUE",
    help="Container environment (repeatable), e.g. MME_MEMORY_BUDGET=6GiB.",
)
@click.option("--min-instances", type=int, default=None, help="Autoscaling floor [1].")
@click.option("--max-instances", type=int, default=None, help="Autoscaling ceiling [max(4, instance count)].")
@click.option(
    "--target-invocations",
    type=float,
    default=70.0,
    show_default=True,
    help="Target invocations per instance per minute.",
)
@click.option("--scale-in-cooldown", type=int, default=600, show_default=True, help="Seconds.")
@click.option("--scale-out-cooldown", type=int, default=300, show_default=True, help="Seconds.")
@click.option("--no-autoscaling", is_flag=True, help="No scalable target (an existing one is deregistered).")
@click.option(
    "--alarm-loading-wait-ms",
    type=float,
    default=5000.0,
    show_default=True,
    help="ModelLoadingWaitTime average above this alarms.",
)
@click.option(
    "--alarm-cache-hit-min",
    type=float,
    default=0.8,
    show_default=True,
    help="ModelCacheHit average below this alarms.",
)
@click.option(
    "--alarm-5xx",
    type=int,
    default=1,
    show_default=True,
    help="Invocation5XXErrors per period at or above this alarms.",
)
@click.option(
    "--alarm-memory-percent",
    type=float,
    default=85.0,
    show_default=True,
    help="MemoryUtilization average above this alarms.",
)
@click.option(
    "--alarm-period", type=int, default=300, show_default=True, help="Seconds per evaluation period."
)
@click.option("--alarm-evaluation-periods", type=int, default=3, show_default=True)
@click.option("--sns-topic-arn", default=None, help="Notify this SNS topic on alarm and OK.")
@click.option("--no-alarms", is_flag=True, help="No alarms (existing ones of this endpoint are deleted).")
@click.option("--dry-run", is_flag=True, help="Print the plan (every changing API call), call none of them.")
@click.option("--poll-seconds", type=float, default=15.0, show_default=True, hidden=True)
@click.option(
    "--wait-timeout", type=float, default=3600.0, show_default=True, help="Seconds to wait for InService."
)
@_aws_errors
def deploy(
    name: str,
    image_uri: str | None,
    model_data_prefix: str | None,
    role_arn: str | None,
    instance_type: str,
    instance_count: int,
    env: tuple[str, ...],
    min_instances: int | None,
    max_instances: int | None,
    target_invocations: float,
    scale_in_cooldown: int,
    scale_out_cooldown: int,
    no_autoscaling: bool,
    alarm_loading_wait_ms: float,
    alarm_cache_hit_min: float,
    alarm_5xx: int,
    alarm_memory_percent: float,
    alarm_period: int,
    alarm_evaluation_periods: int,
    sns_topic_arn: str | None,
    no_alarms: bool,
    dry_run: bool,
    poll_seconds: float,
    wait_timeout: float,
) -> None:
    """Create or update endpoint NAME (model, a new endpoint config per change, endpoint), wait for InService,
    then autoscaling and alarms. Run it again with the same arguments and nothing changes.

    --dry-run still reads what exists (Describe/List calls only) to know what would change."""
    spec = DeploySpec(
        name=check_name(name),
        image_uri=check_image_uri(image_uri, region()),
        model_data_prefix=check_prefix(model_data_prefix),
        role_arn=check_role(role_arn),
        instance_type=check_instance_type(instance_type),
        instance_count=instance_count,
        environment=check_env(env),
        scaling=None
        if no_autoscaling
        else check_scaling(
            instance_count,
            min_instances,
            max_instances,
            target_invocations,
            scale_in_cooldown,
            scale_out_cooldown,
        ),
        alarms=None
        if no_alarms
        else check_alarms(
            alarm_loading_wait_ms,
            alarm_cache_hit_min,
            alarm_5xx,
            alarm_memory_percent,
            alarm_period,
            alarm_evaluation_periods,
            sns_topic_arn,
        ),
    )
    aws = clients()
    plan = deploy_plan(spec, read_state(aws, name))
    _run(plan, dry_run, aws, poll_seconds, wait_timeout)
    if not dry_run:
        _progress(
            f"endpoint {name} is InService with {spec.config_name} ({spec.instance_count} x "
            f"{spec.instance_type})"
        )


@main.command()
@click.argument("name")
@click.option("--dry-run", is_flag=True, help="Print the plan, call none of it.")
@_aws_errors
def teardown(name: str, dry_run: bool) -> None:
    """Delete what mme-deploy created for NAME (tagged mme-deploy:endpoint=NAME), and nothing else."""
    check_name(name)
    aws = clients()
    state = read_state(aws, name)
    if state.endpoint is not None and not state.endpoint_owned:
        _progress(f"endpoint {name} was not created by mme-deploy: left alone")
    plan = teardown_plan(state)
    if not plan:
        _progress(f"nothing of mme-deploy's for {name}")
        return
    _run(plan, dry_run, aws, 0, 0)


@main.command()
@click.argument("name")
@click.option(
    "--hours",
    type=click.FloatRange(min=1 / 60, max=24 * 14),
    default=3.0,
    show_default=True,
    help="The window, ending now.",
)
@click.option(
    "--custom-namespace",
    default="sklearn-mme",
    show_default=True,
    help="Namespace of per-model series published from the container's /metrics ('' for none).",
)
@_aws_errors
def metrics(name: str, hours: float, custom_namespace: str) -> None:
    """The endpoint's MME CloudWatch metrics over the last H hours (one value per metric)."""
    check_name(name)
    rows = metrics_mod.collect(clients()["cloudwatch"], name, hours, custom_namespace or None)
    click.echo(f"endpoint {name}, last {hours:g} h")
    click.echo(metrics_mod.table(rows))


if __name__ == "__main__":
    sys.exit(main())
