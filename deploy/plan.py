"""A plan is a list of steps: AWS API calls with their exact arguments, and waits. `--dry-run` prints it and
the executor runs the same list, so what is shown and what is called cannot drift apart."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from botocore import xform_name

# boto3 service names used by mme-deploy.
SERVICES = ("sagemaker", "application-autoscaling", "cloudwatch")


@dataclass(frozen=True)
class Call:
    service: str
    operation: str  # the API name, e.g. CreateEndpointConfig
    params: dict[str, Any] = field(default_factory=dict)

    def render(self) -> str:
        return f"{self.service} {self.operation} {json.dumps(self.params, sort_keys=True)}"


@dataclass(frozen=True)
class WaitInService:
    """Poll DescribeEndpoint until InService (a Failed endpoint or the timeout ends the run)."""

    endpoint_name: str

    def render(self) -> str:
        return f"sagemaker wait-endpoint-in-service {json.dumps({'EndpointName': self.endpoint_name})}"


Step = Call | WaitInService


def render(plan: list[Step]) -> str:
    """One line per step: `SERVICE OPERATION {json arguments}`."""
    return "\n".join(step.render() for step in plan)


class DeployError(Exception):
    """A run-time failure (an endpoint that failed, a timeout): a one-line message."""


def execute(
    plan: list[Step],
    clients: Mapping[str, Any],
    progress: Callable[[str], None],
    poll_seconds: float = 15.0,
    wait_timeout: float = 3600.0,
) -> None:
    for step in plan:
        if isinstance(step, WaitInService):
            wait_in_service(clients["sagemaker"], step.endpoint_name, progress, poll_seconds, wait_timeout)
            continue
        progress(f"{step.service} {step.operation}")
        getattr(clients[step.service], xform_name(step.operation))(**step.params)


def wait_in_service(
    sm: Any, name: str, progress: Callable[[str], None], poll_seconds: float, timeout: float
) -> None:
    start = time.monotonic()
    last = None
    while True:
        desc = sm.describe_endpoint(EndpointName=name)
        status = desc["EndpointStatus"]
        elapsed = time.monotonic() - start
        if status != last:
            progress(f"endpoint {name}: {status} ({elapsed:.0f} s)")
            last = status
        if status == "InService":
            return
        if status in ("Failed", "OutOfService", "Deleting"):
            reason = desc.get("FailureReason", "no reason given")
            raise DeployError(f"endpoint {name} is {status}: {reason}")
        if elapsed > timeout:
            raise DeployError(f"endpoint {name} still {status} after {timeout:.0f} s")
        time.sleep(poll_seconds)
