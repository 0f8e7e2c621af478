"""The options `mme-local` commands share, typed: sizes, the model store, and the harness's settings
(collected into one `HarnessOptions` for `serve` and `scenario`)."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from sklearn_mme.harness.units import parse_size

if TYPE_CHECKING:
    from sklearn_mme.harness.app import HarnessConfig
    from sklearn_mme.harness.store import Store


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


def fail(message: str) -> NoReturn:
    """End the command with exit status 1 and a one-line message."""
    raise click.ClickException(message)


def open_store(uri: str, s3_endpoint_url: str | None) -> Store:
    from sklearn_mme.harness.store import StoreError
    from sklearn_mme.harness.store import open_store as _open

    try:
        return _open(uri, s3_endpoint_url)
    except StoreError as err:
        fail(str(err))


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


@dataclass(frozen=True)
class HarnessOptions:
    """What `serve` and `scenario` are told about the harness to start (one field per option)."""

    model_store: str
    max_models: int | None
    memory_budget: int | None
    runtime: str
    image: str | None
    container_port: int
    container_cli: str | None
    container_url: str | None
    artifact_cache: int
    model_wait_timeout: float
    work_dir: Path | None
    s3_endpoint_url: str | None

    def config(self, port: int, host: str = "127.0.0.1", endpoint_name: str | None = None) -> HarnessConfig:
        from sklearn_mme.harness.app import HarnessConfig

        return HarnessConfig(
            model_store=self.model_store,
            port=port,
            host=host,
            max_models=self.max_models,
            memory_budget=self.memory_budget,
            runtime=self.runtime,
            image=self.image,
            container_port=self.container_port,
            container_cli=self.container_cli,
            container_url=self.container_url,
            s3_endpoint_url=self.s3_endpoint_url,
            artifact_cache_bytes=self.artifact_cache,
            wait_limit=self.model_wait_timeout,
            endpoint_name=endpoint_name,
            work_dir=self.work_dir,
        )


_HARNESS_OPTIONS = [
    store_option,
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
_FIELDS = tuple(f.name for f in dataclasses.fields(HarnessOptions))


def harness_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the harness options to `command`, which receives them as one `harness: HarnessOptions`."""

    @functools.wraps(command)
    def with_options(**params: Any) -> Any:
        options = HarnessOptions(**{name: params.pop(name) for name in _FIELDS})
        return command(harness=options, **params)

    decorated: Callable[..., Any] = with_options
    for option in reversed(_HARNESS_OPTIONS):
        decorated = option(decorated)
    return decorated


def instances_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """--instances and --hot-rate: an endpoint of several instances (harness/endpoint.py, routing.py)."""
    command = click.option(
        "--hot-rate",
        type=click.FloatRange(min=0.1),
        default=20.0,
        show_default=True,
        help="Requests per second per instance holding a model above which its requests spread to "
        "another instance (SageMaker does not publish its own figure).",
    )(command)
    return click.option(
        "--instances",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Instances of the endpoint, each with its own container, limits and LRU.",
    )(command)
