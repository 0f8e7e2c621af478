"""From what is asked (a DeploySpec) and what exists (a State), the plan: the API calls that make it so."""

from __future__ import annotations

from sklearn_mme.deploy.plan import Call, Step, WaitInService
from sklearn_mme.deploy.spec import VARIANT, Alarms, DeploySpec, InputError, Scaling
from sklearn_mme.deploy.state import State, alarm_prefix, resource_id

SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
POLICY_SUFFIX = "-invocations-per-instance"


def deploy_plan(spec: DeploySpec, state: State) -> list[Step]:
    name = spec.name
    if state.endpoint is not None and not state.endpoint_owned:
        raise InputError(
            f"endpoint {name} exists and was not created by mme-deploy (no {name!r} ownership tag)"
        )
    plan = _definition_calls(spec, state)
    old_config = _endpoint_calls(spec, state, plan)
    plan.append(WaitInService(name))
    if spec.scaling is not None:
        plan.extend(scaling_calls(name, spec.scaling))
    elif state.scalable_target and deregister(name) not in plan:
        plan.append(deregister(name))
    if spec.alarms is not None:
        plan.extend(alarm_calls(spec, spec.alarms))
    elif state.alarms:
        plan.append(Call("cloudwatch", "DeleteAlarms", {"AlarmNames": sorted(state.alarms)}))
    if old_config is not None:
        # The previous config (and its model, when no longer used) is ours and now unused.
        plan.append(Call("sagemaker", "DeleteEndpointConfig", {"EndpointConfigName": old_config}))
        for model in state.models:
            if model != spec.model_name:
                plan.append(Call("sagemaker", "DeleteModel", {"ModelName": model}))
    return plan


def _definition_calls(spec: DeploySpec, state: State) -> list[Step]:
    """The model and the endpoint config, each created when no existing one has this content's name."""
    plan: list[Step] = []
    if spec.model_name not in state.models:
        plan.append(
            Call(
                "sagemaker",
                "CreateModel",
                {"ModelName": spec.model_name, **spec.model_def(), "Tags": spec.tags},
            )
        )
    if spec.config_name not in state.configs:
        plan.append(
            Call(
                "sagemaker",
                "CreateEndpointConfig",
                {
                    "EndpointConfigName": spec.config_name,
                    "ProductionVariants": spec.variants(),
                    "Tags": spec.tags,
                },
            )
        )
    return plan


def _endpoint_calls(spec: DeploySpec, state: State, plan: list[Step]) -> str | None:
    """Create the endpoint, or move it to the new config; returns the config it leaves, if any."""
    name = spec.name
    if state.endpoint is None:
        plan.append(
            Call(
                "sagemaker",
                "CreateEndpoint",
                {"EndpointName": name, "EndpointConfigName": spec.config_name, "Tags": spec.tags},
            )
        )
        return None
    if state.endpoint["EndpointConfigName"] == spec.config_name:
        return None
    # A variant registered with Application Auto Scaling must be deregistered before its instance
    # count or type changes; it is registered again below once the endpoint is back in service.
    if state.scalable_target:
        plan.append(deregister(name))
    plan.append(
        Call("sagemaker", "UpdateEndpoint", {"EndpointName": name, "EndpointConfigName": spec.config_name})
    )
    return state.endpoint["EndpointConfigName"]


def teardown_plan(state: State) -> list[Step]:
    name = state.name
    plan: list[Step] = []
    if state.scalable_target and state.endpoint_owned:
        plan.append(deregister(name))
    if state.alarms:
        plan.append(Call("cloudwatch", "DeleteAlarms", {"AlarmNames": sorted(state.alarms)}))
    if state.endpoint is not None and state.endpoint_owned:
        plan.append(Call("sagemaker", "DeleteEndpoint", {"EndpointName": name}))
    plan.extend(
        Call("sagemaker", "DeleteEndpointConfig", {"EndpointConfigName": c}) for c in sorted(state.configs)
    )
    plan.extend(Call("sagemaker", "DeleteModel", {"ModelName": m}) for m in sorted(state.models))
    return plan


def deregister(name: str) -> Call:
    """Deregistering the scalable target also deletes its scaling policies."""
    return Call(
        "application-autoscaling",
        "DeregisterScalableTarget",
        {
            "ServiceNamespace": "sagemaker",
            "ResourceId": resource_id(name),
            "ScalableDimension": SCALABLE_DIMENSION,
        },
    )


def scaling_calls(name: str, s: Scaling) -> list[Call]:
    target = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(name),
        "ScalableDimension": SCALABLE_DIMENSION,
    }
    return [
        Call(
            "application-autoscaling",
            "RegisterScalableTarget",
            {**target, "MinCapacity": s.min_instances, "MaxCapacity": s.max_instances},
        ),
        Call(
            "application-autoscaling",
            "PutScalingPolicy",
            {
                **target,
                "PolicyName": name + POLICY_SUFFIX,
                "PolicyType": "TargetTrackingScaling",
                "TargetTrackingScalingPolicyConfiguration": {
                    "TargetValue": s.target_invocations,
                    "PredefinedMetricSpecification": {
                        "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
                    },
                    "ScaleInCooldown": s.scale_in_cooldown,
                    "ScaleOutCooldown": s.scale_out_cooldown,
                },
            },
        ),
    ]


def alarm_calls(spec: DeploySpec, a: Alarms) -> list[Call]:
    dims = [{"Name": "EndpointName", "Value": spec.name}, {"Name": "VariantName", "Value": VARIANT}]
    actions = [a.sns_topic_arn] if a.sns_topic_arn else []
    # (alarm suffix, namespace, metric, statistic, comparison, threshold, what it means)
    rows = [
        (
            "model-loading-wait",
            "AWS/SageMaker",
            "ModelLoadingWaitTime",
            "Average",
            "GreaterThanThreshold",
            a.loading_wait_ms * 1000.0,
            "requests wait for model loads (microseconds)",
        ),
        (
            "model-cache-hit",
            "AWS/SageMaker",
            "ModelCacheHit",
            "Average",
            "LessThanThreshold",
            a.cache_hit_min,
            "models thrash in and out of memory",
        ),
        (
            "5xx-errors",
            "AWS/SageMaker",
            "Invocation5XXErrors",
            "Sum",
            "GreaterThanOrEqualToThreshold",
            float(a.errors_5xx),
            "the container answers 5xx",
        ),
        (
            "memory",
            "/aws/sagemaker/Endpoints",
            "MemoryUtilization",
            "Average",
            "GreaterThanThreshold",
            a.memory_percent,
            "instance memory (percent)",
        ),
    ]
    return [
        Call(
            "cloudwatch",
            "PutMetricAlarm",
            {
                "AlarmName": alarm_prefix(spec.name) + suffix,
                "AlarmDescription": f"mme-deploy {spec.name}: {meaning}",
                "Namespace": namespace,
                "MetricName": metric,
                "Dimensions": dims,
                "Statistic": stat,
                "Period": a.period,
                "EvaluationPeriods": a.evaluation_periods,
                "Threshold": threshold,
                "ComparisonOperator": op,
                # No invocations means no ModelCacheHit / wait samples: that is not an alarm.
                "TreatMissingData": "notBreaching",
                "ActionsEnabled": bool(actions),
                "AlarmActions": actions,
                "OKActions": actions,
                "Tags": spec.tags,
            },
        )
        for suffix, namespace, metric, stat, op, threshold, meaning in rows
    ]
