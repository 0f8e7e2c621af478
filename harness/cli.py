"""`mme-local`: play SageMaker's part in front of the MME container, and manage a model store."""

from __future__ import annotations

import logging
import signal
import sys
import tempfile
import threading
from pathlib import Path

import click
from sklearn_mme.harness.units import format_size, parse_size


class SizeType(click.ParamType):
    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_size(str(value))
        except ValueError as err:
            self.fail(str(err), param, ctx)


SIZE = SizeType()


def _fail(message: str) -> None:
    raise click.ClickException(message)


def _open_store(uri: str, s3_endpoint_url: str | None):
    from sklearn_mme.harness.store import StoreError, open_store

    try:
        return open_store(uri, s3_endpoint_url)
    except StoreError as err:
        _fail(str(err))


store_option = click.option(
    "--model-store",
    "model_store",
    required=True,
    metavar="DIR_OR_S3_URI",
    help="Directory or s3://bucket/prefix/ holding the *.tar.gz artifacts.",
)
s3_option = click.option(
    "--s3-endpoint-url",
    envvar="AWS_ENDPOINT_URL_S3",
    default=None,
    metavar="URL",
    help="S3-compatible endpoint (env AWS_ENDPOINT_URL_S3).",
)


def _harness_options(f):
    options = [
        click.option(
            "--max-models",
            type=click.IntRange(min=1),
            default=None,
            help="Most models loaded at once; the least recently used is unloaded.",
        ),
        click.option(
            "--memory-budget",
            type=SIZE,
            default=None,
            help="Budget for loaded models, counted at their extracted size (e.g. 512MB, 2GiB).",
        ),
        click.option(
            "--runtime",
            type=click.Choice(["process", "docker", "external"]),
            default="process",
            show_default=True,
            help="process: run container/serve; docker: run --image with "
            "docker/podman; external: use --container-url.",
        ),
        click.option("--image", default=None, help="Image for --runtime docker."),
        click.option(
            "--container-port",
            type=click.IntRange(1, 65535),
            default=8080,
            show_default=True,
            help="Port the server listens on inside the image.",
        ),
        click.option(
            "--container-cli",
            envvar="CONTAINER_CLI",
            default=None,
            help="docker or podman (env CONTAINER_CLI; default: docker, then podman).",
        ),
        click.option(
            "--container-url", default=None, help="Base URL of a running container (--runtime external)."
        ),
        click.option(
            "--artifact-cache",
            "artifact_cache",
            type=SIZE,
            default="2GiB",
            show_default=True,
            help="Disk budget for downloaded artifacts.",
        ),
        click.option(
            "--model-wait-timeout",
            type=click.FloatRange(min=0.1),
            default=60.0,
            show_default=True,
            help="Seconds a request waits for its model to load before ModelNotReadyException.",
        ),
        click.option(
            "--work-dir",
            type=click.Path(file_okay=False, path_type=Path),
            default=None,
            help="Keep extracted models, artifacts and the container log here (default: a temp dir, "
            "removed on exit).",
        ),
        s3_option,
    ]
    for option in reversed(options):
        f = option(f)
    return store_option(f)


def _config(model_store: str, port: int, **kw: object):
    from sklearn_mme.harness.app import HarnessConfig

    return HarnessConfig(
        model_store=model_store,
        port=port,
        host=str(kw.get("host", "127.0.0.1")),
        max_models=kw["max_models"],
        memory_budget=kw["memory_budget"],
        runtime=str(kw["runtime"]),
        image=kw["image"],
        container_port=int(kw["container_port"]),
        container_cli=kw["container_cli"],
        container_url=kw["container_url"],
        s3_endpoint_url=kw["s3_endpoint_url"],
        artifact_cache_bytes=int(kw["artifact_cache"]),
        wait_limit=float(kw["model_wait_timeout"]),
        endpoint_name=kw.get("endpoint_name"),
        work_dir=kw.get("work_dir"),
    )  # type: ignore[arg-type]


def _start(config):
    from sklearn_mme.harness.app import Harness
    from sklearn_mme.harness.container import RuntimeStartError
    from sklearn_mme.harness.store import StoreError

    try:
        harness = Harness(config)
    except (ValueError, StoreError) as err:
        _fail(str(err))
    try:
        harness.start()
    except RuntimeStartError as err:
        _fail(f"the container did not start: {err}")
    except OSError as err:
        _fail(f"cannot listen on {config.host}:{config.port}: {err.strerror or err}")
    return harness


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
def main(verbose: int) -> None:
    """Local SageMaker multi-model endpoint: load, evict and invoke models with boto3 before deploying."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@_harness_options
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=8080,
    show_default=True,
    help="Port of the runtime API (boto3 endpoint_url).",
)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--endpoint-name", default=None, help="Answer only this EndpointName (default: any).")
def serve(model_store: str, port: int, **kw: object) -> None:
    """Serve the SageMaker runtime API in front of the container until Ctrl-C / SIGTERM."""
    harness = _start(_config(model_store, port, **kw))
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
        f"({', '.join(limits) or 'no model limit'}); container: {harness.runtime.describe()}"
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


@main.command("package")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=None,
    help="Archive to write (default: NAME.tar.gz in the current directory).",
)
def package_cmd(source: Path, output: Path | None) -> None:
    """Package a model file or directory as a SageMaker artifact (model.joblib at the root, code/)."""
    from sklearn_mme.harness.packaging import PackagingError, default_key, package

    output = output or Path(default_key(source))
    try:
        archive = package(source, output)
    except PackagingError as err:
        _fail(str(err))
    click.echo(f"{archive}  {format_size(archive.stat().st_size)}")


@main.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@store_option
@click.option("--key", default=None, help="Key in the store, i.e. the TargetModel (default: NAME.tar.gz).")
@s3_option
def add(source: Path, model_store: str, key: str | None, s3_endpoint_url: str | None) -> None:
    """Add a model (file, directory or ready .tar.gz) to the store."""
    from sklearn_mme.harness.extract import UnsafeArchiveError, safe_extract
    from sklearn_mme.harness.packaging import PackagingError, default_key, package
    from sklearn_mme.harness.store import InvalidKey, StoreError

    store = _open_store(model_store, s3_endpoint_url)
    key = key or default_key(source)
    with tempfile.TemporaryDirectory(prefix="mme-local-add-") as tmp:
        if source.is_file() and source.name.endswith((".tar.gz", ".tgz")):
            archive = source
            try:  # refuse now what the harness would refuse at load time
                safe_extract(archive, Path(tmp) / "check")
            except UnsafeArchiveError as err:
                _fail(f"{source}: {err}")
        else:
            try:
                archive = package(source, Path(tmp) / "model.tar.gz")
            except PackagingError as err:
                _fail(str(err))
        try:
            obj = store.upload(archive, key)
        except (InvalidKey, StoreError) as err:
            _fail(str(err))
    click.echo(f"added {obj.key}  {format_size(obj.size)}  to {store.uri}")


@main.command()
@click.argument("keys", nargs=-1, required=True)
@store_option
@s3_option
def remove(keys: tuple[str, ...], model_store: str, s3_endpoint_url: str | None) -> None:
    """Remove models from the store (a harness keeps serving a loaded copy until it unloads it)."""
    from sklearn_mme.harness.store import InvalidKey, StoreError

    store = _open_store(model_store, s3_endpoint_url)
    missing = []
    for key in keys:
        try:
            removed = store.delete(key)
        except (InvalidKey, StoreError) as err:
            _fail(str(err))
        if removed:
            click.echo(f"removed {key}")
        else:
            missing.append(key)
    if missing:
        _fail(f"not in {store.uri}: {', '.join(missing)}")


@main.command("list")
@store_option
@s3_option
def list_cmd(model_store: str, s3_endpoint_url: str | None) -> None:
    """List the models in the store with their sizes."""
    from sklearn_mme.harness.store import StoreError

    store = _open_store(model_store, s3_endpoint_url)
    try:
        objects = store.list()
    except StoreError as err:
        _fail(str(err))
    width = max((len(o.key) for o in objects), default=5)
    for obj in objects:
        click.echo(f"{obj.key.ljust(width)}  {format_size(obj.size):>10}")
    click.echo(
        f"{len(objects)} model(s), {format_size(sum(o.size for o in objects))} in {store.uri}", err=True
    )


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
            _fail(f"cannot read {body[1:]}: {err.strerror}")
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
        _fail(f"{error.get('Code')}: {error.get('Message')}{extra}")
    except BotoCoreError as err:
        _fail(f"cannot reach the harness at {endpoint_url}: {err}")
    headers = resp["ResponseMetadata"]["HTTPHeaders"]
    click.echo(
        f"# {resp.get('ContentType')}  cache={headers.get('x-mme-cache')}  "
        f"load-wait={headers.get('x-mme-load-wait-ms')}ms",
        err=True,
    )
    sys.stdout.buffer.write(resp["Body"].read())
    sys.stdout.buffer.write(b"\n")


@main.command("scenario")
@_harness_options
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
def scenario_cmd(model_store: str, script: Path, endpoint_url: str | None, **kw: object) -> None:
    """Run a scripted load / evict / invoke session and print a per-model report table."""
    from sklearn_mme.harness import scenario
    from sklearn_mme.harness.container import free_port

    try:
        reqs, rounds, concurrency, pattern, seed = scenario.load_script(script)
    except scenario.ScenarioError as err:
        _fail(str(err))
    plan = scenario.schedule(reqs, rounds, pattern, seed)
    harness = None
    if endpoint_url is None:
        harness = _start(_config(model_store, free_port(), **kw))
        endpoint_url = harness.url
        click.echo(f"harness on {endpoint_url} ({harness.runtime.describe()})", err=True)
    try:
        report = scenario.run(endpoint_url, plan, concurrency=concurrency, progress=True)
    finally:
        if harness is not None:
            harness.stop()
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
        _fail(f"the container did not start: {err}")
    sys.exit(0 if ok else 1)
