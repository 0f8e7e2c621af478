"""mme-deploy end to end against moto's server: what deploy makes (read back with boto3), the dry-run
plan, an update through a new endpoint config, teardown of ours only, metrics,
bad input refused before any call."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import boto3
import pytest
from botocore.stub import Stubber

from sklearn_mme.deploy import plan as plan_mod
from sklearn_mme.deploy.planner import deploy_plan
from sklearn_mme.deploy.spec import DeploySpec, Scaling
from sklearn_mme.deploy.state import read_state
from tests.deploy.conftest import ACCOUNT, IMAGE, MME_DEPLOY, PREFIX, REGION, ROLE, deploy_args, run

OWNER = "mme-deploy:endpoint"


# The scaled deploy of "seg" that several tests make and then repeat or change.
SEG_SCALED = ("seg", "--instance-type", "ml.c5.xlarge", "--instance-count", "2", "--min-instances", "2",
              "--max-instances", "6")

def parse_plan(stdout: str) -> list[tuple[str, str, dict]]:
    steps = []
    for line in stdout.strip().splitlines():
        service, operation, params = line.split(" ", 2)
        steps.append((service, operation, json.loads(params)))
    return steps


def tags(sm, arn: str) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in sm.list_tags(ResourceArn=arn)["Tags"]}


def test_dry_run_prints_every_call_and_calls_none(aws: dict) -> None:
    res = run(*deploy_args("seg", "--instance-count", "2", "--max-instances", "5", "--dry-run"))
    assert res.exit_code == 0, res.output
    steps = parse_plan(res.stdout)
    assert [(s, op) for s, op, _ in steps] == [
        ("sagemaker", "CreateModel"),
        ("sagemaker", "CreateEndpointConfig"),
        ("sagemaker", "CreateEndpoint"),
        ("sagemaker", "wait-endpoint-in-service"),
        ("application-autoscaling", "RegisterScalableTarget"),
        ("application-autoscaling", "PutScalingPolicy"),
        *[("cloudwatch", "PutMetricAlarm")] * 4,
    ]
    model, config, endpoint = (p for _, _, p in steps[:3])
    assert model["PrimaryContainer"] == {
        "Image": IMAGE,
        "Mode": "MultiModel",
        "ModelDataUrl": PREFIX,
        "Environment": {"SAGEMAKER_MULTI_MODEL": "true"},
    }
    assert model["Tags"] == [{"Key": OWNER, "Value": "seg"}]
    assert config["ProductionVariants"][0]["InitialInstanceCount"] == 2
    assert config["ProductionVariants"][0]["ModelName"] == model["ModelName"]
    assert endpoint == {
        "EndpointName": "seg",
        "EndpointConfigName": config["EndpointConfigName"],
        "Tags": [{"Key": OWNER, "Value": "seg"}],
    }
    assert steps[4][2]["MaxCapacity"] == 5
    # Nothing was created.
    assert aws["sagemaker"].list_endpoints()["Endpoints"] == []
    assert aws["sagemaker"].list_models()["Models"] == []
    assert aws["cloudwatch"].describe_alarms()["MetricAlarms"] == []


def test_deploy_makes_what_was_asked(aws: dict) -> None:
    sm, aas, cw = aws["sagemaker"], aws["application-autoscaling"], aws["cloudwatch"]
    topic = aws["sns"].create_topic(Name="mme-alarms")["TopicArn"]
    proc = subprocess.run(
        [
            MME_DEPLOY,
            *deploy_args(
                *SEG_SCALED,
                "--target-invocations",
                "120",
                "--scale-in-cooldown",
                "900",
                "--scale-out-cooldown",
                "60",
                "--env",
                "MME_MEMORY_BUDGET=6GiB",
                "--alarm-loading-wait-ms",
                "2500",
                "--alarm-cache-hit-min",
                "0.6",
                "--alarm-5xx",
                "3",
                "--alarm-memory-percent",
                "90",
                "--sns-topic-arn",
                topic,
            ),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "endpoint seg: InService" in proc.stderr  # progress while waiting

    ep = sm.describe_endpoint(EndpointName="seg")
    assert ep["EndpointStatus"] == "InService"
    assert tags(sm, ep["EndpointArn"]) == {OWNER: "seg"}
    config = sm.describe_endpoint_config(EndpointConfigName=ep["EndpointConfigName"])
    [variant] = config["ProductionVariants"]
    assert (variant["VariantName"], variant["InstanceType"], variant["InitialInstanceCount"]) == (
        "AllTraffic",
        "ml.c5.xlarge",
        2,
    )
    model = sm.describe_model(ModelName=variant["ModelName"])
    container = model["PrimaryContainer"]
    assert (container["Image"], container["Mode"], container["ModelDataUrl"]) == (IMAGE, "MultiModel", PREFIX)
    assert container["Environment"] == {"SAGEMAKER_MULTI_MODEL": "true", "MME_MEMORY_BUDGET": "6GiB"}
    assert model["ExecutionRoleArn"] == ROLE

    rid = "endpoint/seg/variant/AllTraffic"
    [target] = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[rid])[
        "ScalableTargets"
    ]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (2, 6)
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    [policy] = aas.describe_scaling_policies(ServiceNamespace="sagemaker", ResourceId=rid)["ScalingPolicies"]
    tt = policy["TargetTrackingScalingPolicyConfiguration"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert tt["TargetValue"] == 120.0
    assert (
        tt["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )
    assert (tt["ScaleInCooldown"], tt["ScaleOutCooldown"]) == (900, 60)

    alarms = {a["MetricName"]: a for a in cw.describe_alarms(AlarmNamePrefix="seg-mme-")["MetricAlarms"]}
    assert set(alarms) == {
        "ModelLoadingWaitTime",
        "ModelCacheHit",
        "Invocation5XXErrors",
        "MemoryUtilization",
    }
    expect = {
        "ModelLoadingWaitTime": ("AWS/SageMaker", "GreaterThanThreshold", 2_500_000.0),
        "ModelCacheHit": ("AWS/SageMaker", "LessThanThreshold", 0.6),
        "Invocation5XXErrors": ("AWS/SageMaker", "GreaterThanOrEqualToThreshold", 3.0),
        "MemoryUtilization": ("/aws/sagemaker/Endpoints", "GreaterThanThreshold", 90.0),
    }
    for metric, (namespace, op, threshold) in expect.items():
        a = alarms[metric]
        assert (a["Namespace"], a["ComparisonOperator"], a["Threshold"]) == (namespace, op, threshold), metric
        assert a["AlarmActions"] == [topic] and a["OKActions"] == [topic]
        assert {d["Name"]: d["Value"] for d in a["Dimensions"]} == {
            "EndpointName": "seg",
            "VariantName": "AllTraffic",
        }

    # Idempotent: the same deploy again creates nothing new.
    again = run(
        *deploy_args(
            *SEG_SCALED,
            "--env",
            "MME_MEMORY_BUDGET=6GiB",
            "--dry-run",
        )
    )
    ops = [op for _, op, _ in parse_plan(again.stdout)]
    assert not {"CreateModel", "CreateEndpointConfig", "CreateEndpoint", "UpdateEndpoint"} & set(ops)
    assert len(sm.list_endpoint_configs()["EndpointConfigs"]) == 1


def test_changed_instance_count_updates_through_a_new_config(aws: dict) -> None:
    sm = aws["sagemaker"]
    assert run(*deploy_args("seg")).exit_code == 0
    first = sm.describe_endpoint(EndpointName="seg")["EndpointConfigName"]

    res = run(*deploy_args("seg", "--instance-count", "3", "--dry-run"))
    assert res.exit_code == 0, res.output
    steps = parse_plan(res.stdout)
    ops = [op for _, op, _ in steps]
    assert "CreateModel" not in ops  # same image, prefix and environment: the model is reused
    [new] = [p for _, op, p in steps if op == "CreateEndpointConfig"]
    assert new["EndpointConfigName"] != first
    assert new["ProductionVariants"][0]["InitialInstanceCount"] == 3
    [update] = [p for _, op, p in steps if op == "UpdateEndpoint"]
    assert update == {"EndpointName": "seg", "EndpointConfigName": new["EndpointConfigName"]}
    # The scalable target goes before the update and comes back after it; the old config goes last.
    assert (
        ops.index("DeregisterScalableTarget")
        < ops.index("UpdateEndpoint")
        < ops.index("RegisterScalableTarget")
        < ops.index("DeleteEndpointConfig")
    )
    assert steps[-1][2] == {"EndpointConfigName": first}

    # moto's server has no UpdateEndpoint, so the executor's SageMaker calls for this same plan run against
    # botocore's Stubber (which validates every argument against the real API model); autoscaling and
    # CloudWatch calls still go to moto.
    spec = DeploySpec(
        "seg",
        IMAGE,
        PREFIX,
        ROLE,
        instance_count=3,
        environment={"SAGEMAKER_MULTI_MODEL": "true"},
        scaling=Scaling(max_instances=4),
    )
    clients = {s: boto3.client(s, region_name=REGION) for s in plan_mod.SERVICES}
    plan = deploy_plan(spec, read_state(clients, "seg"))
    assert plan_mod.render(plan) == res.stdout.strip()
    stub_sm = boto3.client("sagemaker", region_name=REGION)
    arn = f"arn:aws:sagemaker:{REGION}:{ACCOUNT}:endpoint/seg"
    with Stubber(stub_sm) as stub:
        stub.add_response("create_endpoint_config", {"EndpointConfigArn": arn + "-config"}, new)
        stub.add_response("update_endpoint", {"EndpointArn": arn}, update)
        desc = {
            "EndpointName": "seg",
            "EndpointArn": arn,
            "EndpointConfigName": new["EndpointConfigName"],
            "EndpointStatus": "InService",
            "CreationTime": datetime.now(UTC),
            "LastModifiedTime": datetime.now(UTC),
        }
        stub.add_response(
            "describe_endpoint", {**desc, "EndpointStatus": "Updating"}, {"EndpointName": "seg"}
        )
        stub.add_response("describe_endpoint", desc, {"EndpointName": "seg"})
        stub.add_response("delete_endpoint_config", {}, {"EndpointConfigName": first})
        seen: list[str] = []
        plan_mod.execute(plan, {**clients, "sagemaker": stub_sm}, seen.append, poll_seconds=0.01)
        stub.assert_no_pending_responses()
    assert "endpoint seg: Updating (0 s)" in seen and "endpoint seg: InService (0 s)" in seen
    rid = "endpoint/seg/variant/AllTraffic"
    assert aws["application-autoscaling"].describe_scalable_targets(
        ServiceNamespace="sagemaker", ResourceIds=[rid]
    )["ScalableTargets"]


def _unrelated_endpoint(aws: dict) -> None:
    """An endpoint made without mme-deploy, plus a look-alike alarm without our tag."""
    sm, cw = aws["sagemaker"], aws["cloudwatch"]
    sm.create_model(
        ModelName="seg-other",
        ExecutionRoleArn=ROLE,
        PrimaryContainer={"Image": IMAGE, "Mode": "MultiModel", "ModelDataUrl": PREFIX},
    )
    sm.create_endpoint_config(
        EndpointConfigName="seg-other",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "seg-other",
                "InstanceType": "ml.m5.large",
                "InitialInstanceCount": 1,
            }
        ],
    )
    sm.create_endpoint(EndpointName="other", EndpointConfigName="seg-other")
    aws["application-autoscaling"].register_scalable_target(
        ServiceNamespace="sagemaker",
        ResourceId="endpoint/other/variant/AllTraffic",
        ScalableDimension="sagemaker:variant:DesiredInstanceCount",
        MinCapacity=1,
        MaxCapacity=2,
    )
    cw.put_metric_alarm(
        AlarmName="seg-mme-hand-made",
        MetricName="Invocations",
        Namespace="AWS/SageMaker",
        Statistic="Sum",
        Period=60,
        EvaluationPeriods=1,
        Threshold=1.0,
        ComparisonOperator="GreaterThanThreshold",
    )


def test_teardown_removes_ours_and_nothing_else(aws: dict) -> None:
    sm, aas, cw = aws["sagemaker"], aws["application-autoscaling"], aws["cloudwatch"]
    _unrelated_endpoint(aws)
    assert run(*deploy_args("seg")).exit_code == 0
    assert run(*deploy_args("seg", "--instance-count", "2", "--dry-run")).exit_code == 0

    res = run("teardown", "seg")
    assert res.exit_code == 0, res.output
    assert [e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]] == ["other"]
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]] == ["seg-other"]
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["seg-other"]
    assert [a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]] == ["seg-mme-hand-made"]
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert [t["ResourceId"] for t in targets] == ["endpoint/other/variant/AllTraffic"]

    # Nothing left of ours; an endpoint not made by mme-deploy is neither torn down nor redeployed over.
    again = run("teardown", "seg")
    assert again.exit_code == 0 and "nothing of mme-deploy's for seg" in again.stderr
    other = run("teardown", "other")
    assert other.exit_code == 0 and "not created by mme-deploy" in other.stderr
    over = run(*deploy_args("other"))
    assert over.exit_code == 2 and "was not created by mme-deploy" in over.stderr
    assert sm.describe_endpoint(EndpointName="other")["EndpointConfigName"] == "seg-other"


def test_metrics_table(aws: dict) -> None:
    cw = aws["cloudwatch"]
    dims = [{"Name": "EndpointName", "Value": "seg"}, {"Name": "VariantName", "Value": "AllTraffic"}]
    now = datetime.now(UTC)
    cw.put_metric_data(
        Namespace="AWS/SageMaker",
        MetricData=[
            {"MetricName": "Invocations", "Dimensions": dims, "Timestamp": now, "Value": v} for v in (10, 32)
        ]
        + [
            {"MetricName": "ModelCacheHit", "Dimensions": dims, "Timestamp": now, "Value": v}
            for v in (1, 0, 1, 1)
        ],
    )
    cw.put_metric_data(
        Namespace="sklearn-mme",
        MetricData=[
            {
                "MetricName": "mme_model_loading_seconds",
                "Timestamp": now,
                "Value": 0.25,
                "Dimensions": [
                    {"Name": "EndpointName", "Value": "seg"},
                    {"Name": "TargetModel", "Value": "a.tar.gz"},
                ],
            }
        ],
    )
    res = run("metrics", "seg", "--hours", "1")
    assert res.exit_code == 0, res.output
    rows = {
        line.split()[0] + ("/" + line.split()[1] if line.split()[1] != "-" else ""): line.split()
        for line in res.stdout.splitlines()[2:]
    }
    assert rows["Invocations"][2:] == ["Sum", "-", "2", "42", "32"]
    assert rows["ModelCacheHit"][2:] == ["Average", "ratio", "4", "0.75", "1"]
    assert rows["mme_model_loading_seconds/TargetModel=a.tar.gz"][5] == "0.25"
    assert rows["MemoryUtilization"][4:] == ["0", "-", "-"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["deploy", "seg", "--image-uri", IMAGE, "--role-arn", ROLE], "missing --model-data-prefix"),
        (
            [
                "deploy",
                "seg",
                "--image-uri",
                IMAGE,
                "--role-arn",
                ROLE,
                "--model-data-prefix",
                "s3://mme-models",
            ],
            "is not an S3 prefix",
        ),
        (
            [
                "deploy",
                "seg",
                "--image-uri",
                IMAGE,
                "--role-arn",
                ROLE,
                "--model-data-prefix",
                "/tmp/models/",
            ],
            "is not an S3 prefix",
        ),
        (
            [
                "deploy",
                "seg",
                "--image-uri",
                "registry.example.com/library/sklearn-mme:1",
                "--role-arn",
                ROLE,
                "--model-data-prefix",
                PREFIX,
            ],
            "is not an ECR image URI",
        ),
        (
            [
                "deploy",
                "seg",
                "--image-uri",
                f"{ACCOUNT}.dkr.ecr.eu-west-1.amazonaws.com/sklearn-mme:1",
                "--role-arn",
                ROLE,
                "--model-data-prefix",
                PREFIX,
            ],
            "SageMaker pulls images from ECR in its own region",
        ),
        (
            [
                "deploy",
                "seg",
                "--image-uri",
                IMAGE,
                "--role-arn",
                "sagemaker-role",
                "--model-data-prefix",
                PREFIX,
            ],
            "is not an IAM role ARN",
        ),
        (
            [*deploy_args("seg")[:8], "--min-instances", "5", "--max-instances", "2"],
            "--min-instances 5 is greater than --max-instances 2",
        ),
        ([*deploy_args("seg")[:8], "--instance-count", "9", "--max-instances", "4"], "is outside"),
        ([*deploy_args("seg")[:8], "--alarm-cache-hit-min", "80"], "ModelCacheHit is a ratio"),
        (["deploy", "bad_name!", "--image-uri", IMAGE], "invalid endpoint name"),
    ],
)
def test_bad_input_is_one_line_before_any_call(aws_env: str, args: list[str], message: str) -> None:
    # A closed port as the AWS endpoint: had any API call been made first, the error would be a connection
    # failure (exit 1), not this message.
    res = run(*args, env={"AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and message in lines[0], res.stderr
    assert res.stdout == ""
