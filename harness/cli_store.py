"""`mme-local` commands that manage a model store: package, add, remove, list."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from sklearn_mme.harness.cli_options import fail, open_store, s3_option, store_option
from sklearn_mme.harness.units import format_size


@click.command("package")
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
        fail(str(err))
    click.echo(f"{archive}  {format_size(archive.stat().st_size)}")


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@store_option
@click.option("--key", default=None, help="Key in the store, i.e. the TargetModel (default: NAME.tar.gz).")
@s3_option
def add(source: Path, model_store: str, key: str | None, s3_endpoint_url: str | None) -> None:
    """Add a model (file, directory or ready .tar.gz) to the store."""
    from sklearn_mme.harness.extract import UnsafeArchiveError, safe_extract
    from sklearn_mme.harness.packaging import PackagingError, default_key, package
    from sklearn_mme.harness.store import InvalidKey, StoreError

    store = open_store(model_store, s3_endpoint_url)
    key = key or default_key(source)
    with tempfile.TemporaryDirectory(prefix="mme-local-add-") as tmp:
        if source.is_file() and source.name.endswith((".tar.gz", ".tgz")):
            archive = source
            try:  # refuse now what the harness would refuse at load time
                safe_extract(archive, Path(tmp) / "check")
            except UnsafeArchiveError as err:
                fail(f"{source}: {err}")
        else:
            try:
                archive = package(source, Path(tmp) / "model.tar.gz")
            except PackagingError as err:
                fail(str(err))
        try:
            obj = store.upload(archive, key)
        except (InvalidKey, StoreError) as err:
            fail(str(err))
    click.echo(f"added {obj.key}  {format_size(obj.size)}  to {store.uri}")


@click.command()
@click.argument("keys", nargs=-1, required=True)
@store_option
@s3_option
def remove(keys: tuple[str, ...], model_store: str, s3_endpoint_url: str | None) -> None:
    """Remove models from the store (a harness keeps serving a loaded copy until it unloads it)."""
    from sklearn_mme.harness.store import InvalidKey, StoreError

    store = open_store(model_store, s3_endpoint_url)
    missing = []
    for key in keys:
        try:
            removed = store.delete(key)
        except (InvalidKey, StoreError) as err:
            fail(str(err))
        if removed:
            click.echo(f"removed {key}")
        else:
            missing.append(key)
    if missing:
        fail(f"not in {store.uri}: {', '.join(missing)}")


@click.command("list")
@store_option
@s3_option
def list_cmd(model_store: str, s3_endpoint_url: str | None) -> None:
    """List the models in the store with their sizes."""
    from sklearn_mme.harness.store import StoreError

    store = open_store(model_store, s3_endpoint_url)
    try:
        objects = store.list()
    except StoreError as err:
        fail(str(err))
    width = max((len(o.key) for o in objects), default=5)
    for obj in objects:
        click.echo(f"{obj.key.ljust(width)}  {format_size(obj.size):>10}")
    click.echo(
        f"{len(objects)} model(s), {format_size(sum(o.size for o in objects))} in {store.uri}", err=True
    )
