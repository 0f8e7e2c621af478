"""`mme-local`: play SageMaker's part in front of the MME container, and manage a model store.

This module has the commands that run a harness (serve, scenario, demo) or talk to one (invoke); the store
commands (package, add, remove, list) are in cli_store.py, the shared options in cli_options.py.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import click

from sklearn_mme.harness.cli_options import HarnessOptions, fail, harness_options, instances_options
from sklearn_mme.harness.cli_replay import replay_cmd, size_cmd, trace_cmd
from sklearn_mme.harness.cli_store import add, list_cmd, package_cmd, remove
from sklearn_mme.harness.units import format_size

if TYPE_CHECKING:
    from sklearn_mme.harness.app import Harness, HarnessConfig
    from sklearn_mme.harness.endpoint import Endpoint


def _start(config: HarnessConfig, instances: int = 1, hot_rate: float | None = None) -> Harness | Endpoint:
    """One instance as `Harness`, several as `Endpoint` (harness/endpoint.py), started."""
    from sklearn_mme.harness.app import Harness
    from sklearn_mme.harness.container import RuntimeStartError
    from sklearn_mme.harness.endpoint import DEFAULT_HOT_RATE, Endpoint
    from sklearn_mme.harness.store import StoreError

    harness: Harness | Endpoint
    try:
        if instances == 1:
            harness = Harness(config)
        else:
            harness = Endpoint(config, instances, hot_rate or DEFAULT_HOT_RATE)
    except (ValueError, StoreError) as err:
        fail(str(err))
    try:
        harness.start()
    except RuntimeStartError as err:
        fail(f"the container did not start: {err}")
    except OSError as err:
        fail(f"cannot listen on {config.host}:{config.port}: {err.strerror or err}")
    return harness


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Local SageMaker multi-model endpoint: load, evict and invoke models with boto3 before deploying."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@harness_options
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Port of the runtime API (boto3 endpoint_url).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--endpoint-name", default=None, help="Answer only this EndpointName (default: any).")
@instances_options
def serve(harness: HarnessOptions, port: int, host: str, endpoint_name: str | None, instances: int,
          hot_rate: float) -> None:
    """Serve the SageMaker runtime API in front of the container(s) until Ctrl-C / SIGTERM."""
    running = _start(harness.config(port, host, endpoint_name), instances, hot_rate)
    _serve_until_stopped(running)


def _serve_until_stopped(harness: Harness | Endpoint) -> None:
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    limits = []
    if harness.config.max_models:
        limits.append(f"max {harness.config.max_models} models")
    if harness.config.memory_budget:
        limits.append(f"memory budget {format_size(harness.config.memory_budget)}")
    click.echo(
        f"mme-local: serving {harness.store.uri} on {harness.url} "
        f"({', '.join(limits) or 'no model limit'}); container: {harness.describe_container()}"
    )
    click.echo(
        f"mme-local: boto3 client('sagemaker-runtime', endpoint_url='{harness.url}'); metrics at "
        f"{harness.url}/metrics",
        err=True,
    )
    sys.stdout.flush()
    try:
        while not done.wait(0.5):
            if harness.failed.is_set():
                click.echo("mme-local: the container keeps exiting; stopping (see its log)", err=True)
                harness.stop()
                sys.exit(1)
    finally:
        harness.stop()
    click.echo("mme-local: stopped")


@main.command()
@click.option("--endpoint-url", default="http://127.0.0.1:8080", show_default=True, help="The harness.")
@click.option("--endpoint-name", default="mme-local", show_default=True)
@click.option("--target-model", "-m", required=True, help="Key of the model in the store.")
@click.option("--body", "-b", default=None, help="Request body; '@FILE' reads a file, '-' reads stdin.")
@click.option("--content-type", "-t", default="text/csv", show_default=True)
@click.option("--accept", "-a", default="application/json", show_default=True)
@click.option("--custom-attributes", default=None)
def invoke(
    endpoint_url: str,
    endpoint_name: str,
    target_model: str,
    body: str | None,
    content_type: str,
    accept: str,
    custom_attributes: str | None,
) -> None:
    """Send one invocation through boto3's sagemaker-runtime client and print the answer."""
    from botocore.exceptions import BotoCoreError, ClientError

    from sklearn_mme.harness.scenario import runtime_client

    if body is None or body == "-":
        data = sys.stdin.buffer.read()
    elif body.startswith("@"):
        try:
            data = Path(body[1:]).read_bytes()
        except OSError as err:
            fail(f"cannot read {body[1:]}: {err.strerror}")
    else:
        data = body.encode()
    kwargs = {"CustomAttributes": custom_attributes} if custom_attributes else {}
    try:
        resp = runtime_client(endpoint_url).invoke_endpoint(
            EndpointName=endpoint_name,
            TargetModel=target_model,
            Body=data,
            ContentType=content_type,
            Accept=accept,
            **kwargs,
        )
    except ClientError as err:
        error = err.response.get("Error", {})
        extra = ""
        if "OriginalStatusCode" in err.response:
            extra = f" (model answered {err.response['OriginalStatusCode']})"
        fail(f"{error.get('Code')}: {error.get('Message')}{extra}")
    except BotoCoreError as err:
        fail(f"cannot reach the harness at {endpoint_url}: {err}")
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    click.echo(
        f"# {resp.get('ContentType')}  cache={headers.get('x-mme-cache')}  "
        f"load-wait={headers.get('x-mme-load-wait-ms')}ms",
        err=True,
    )
    sys.stdout.buffer.write(resp["Body"].read())
    sys.stdout.buffer.write(b"\n")


@main.command("scenario")
@harness_options
@click.option(
    "--script",
    "script",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help='JSON: {"models": {KEY: {"body": ..., "content_type": ...}}, "pattern": "round-robin", '
    '"rounds": 3, "concurrency": 1}.',
)
@click.option(
    "--endpoint-url",
    default=None,
    help="Use this running harness instead of starting one (then the harness options are ignored).",
)
def scenario_cmd(harness: HarnessOptions, script: Path, endpoint_url: str | None) -> None:
    """Run a scripted load / evict / invoke session and print a per-model report table."""
    from sklearn_mme.harness import scenario
    from sklearn_mme.harness.container import free_port

    try:
        reqs, rounds, concurrency, pattern, seed = scenario.load_script(script)
    except scenario.ScenarioError as err:
        fail(str(err))
    plan = scenario.schedule(reqs, rounds, pattern, seed)
    running = None
    if endpoint_url is None:
        running = _start(harness.config(free_port()))
        endpoint_url = running.url
        click.echo(f"harness on {endpoint_url} ({running.describe_container()})", err=True)
    try:
        report = scenario.run(endpoint_url, plan, concurrency=concurrency, progress=True)
    finally:
        if running is not None:
            running.stop()
    click.echo(report.table())
    click.echo(
        f"{len(plan)} requests ({pattern}, concurrency {concurrency}) in {report.seconds:.2f}s; "
        f"at most {report.max_loaded} models loaded at once"
    )
    errors = [o for o in report.outcomes if not o.ok]
    for out in errors[:5]:
        click.echo(f"error: {out.model}: {out.error}", err=True)
    if errors:
        sys.exit(1)


@main.command()
@click.option("--max-models", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--rounds", type=click.IntRange(min=1), default=3, show_default=True)
def demo(max_models: int, rounds: int) -> None:
    """Train the example models, serve them with little room, invoke them through boto3, report."""
    from sklearn_mme.harness.container import RuntimeStartError
    from sklearn_mme.harness.demo import run_demo

    try:
        ok = run_demo(max_models=max_models, rounds=rounds, echo=click.echo)
    except RuntimeStartError as err:
        fail(f"the container did not start: {err}")
    sys.exit(0 if ok else 1)


for _command in (package_cmd, add, remove, list_cmd, trace_cmd, replay_cmd, size_cmd):
    main.add_command(_command)
