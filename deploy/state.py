"""Read-only look at what exists for an endpoint NAME (Describe*/List* calls only), and which of it is ours:
a resource is ours when it carries the tag mme-deploy:endpoint = NAME."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from sklearn_mme.deploy.spec import OWNER_TAG, VARIANT


def resource_id(name: str) -> str:
    """Application Auto Scaling's id for the endpoint's variant."""
    return f"endpoint/{name}/variant/{VARIANT}"


def alarm_prefix(name: str) -> str:
    return f"{name}-mme-"


@dataclass
class State:
    name: str
    endpoint: dict | None = None  # DescribeEndpoint's answer
    endpoint_owned: bool = False
    models: list[str] = field(default_factory=list)  # ours, by name
    configs: list[str] = field(default_factory=list)  # ours, by name
    scalable_target: bool = False
    alarms: list[str] = field(default_factory=list)  # ours, by name


def _missing(err: ClientError) -> bool:
    code = err.response.get("Error", {}).get("Code", "")
    msg = err.response.get("Error", {}).get("Message", "")
    return code in ("ValidationException", "ResourceNotFound") and "not find" in msg.lower()


def _tagged(tags: list[dict], name: str) -> bool:
    return any(t["Key"] == OWNER_TAG and t["Value"] == name for t in tags)


def _owned(sm: Any, arn: str, name: str) -> bool:
    return _tagged(sm.list_tags(ResourceArn=arn)["Tags"], name)


def read_state(clients: dict[str, Any], name: str) -> State:
    sm, aas, cw = clients["sagemaker"], clients["application-autoscaling"], clients["cloudwatch"]
    state = State(name)
    try:
        state.endpoint = sm.describe_endpoint(EndpointName=name)
    except ClientError as err:
        if not _missing(err):
            raise
    if state.endpoint is not None:
        state.endpoint_owned = _owned(sm, state.endpoint["EndpointArn"], name)
    # NameContains narrows the listing; the tag decides.
    for model in _paged(sm, "list_models", "Models", NameContains=name):
        if model["ModelName"].startswith(name + "-") and _owned(sm, model["ModelArn"], name):
            state.models.append(model["ModelName"])
    for config in _paged(sm, "list_endpoint_configs", "EndpointConfigs", NameContains=name):
        if config["EndpointConfigName"].startswith(name + "-") and _owned(
            sm, config["EndpointConfigArn"], name
        ):
            state.configs.append(config["EndpointConfigName"])
    targets = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource_id(name)])
    state.scalable_target = bool(targets["ScalableTargets"])
    for alarm in _paged(cw, "describe_alarms", "MetricAlarms", AlarmNamePrefix=alarm_prefix(name)):
        if _tagged(cw.list_tags_for_resource(ResourceARN=alarm["AlarmArn"])["Tags"], name):
            state.alarms.append(alarm["AlarmName"])
    return state


def _paged(client: Any, method: str, key: str, **kwargs: Any) -> list[dict]:
    out: list[dict] = []
    for page in client.get_paginator(method).paginate(**kwargs):
        out.extend(page[key])
    return out
