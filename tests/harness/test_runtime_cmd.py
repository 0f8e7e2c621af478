"""Container runtime command lines, metric names and the CLI's handling of bad input (no servers)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from sklearn_mme.harness.cli import main
from sklearn_mme.harness.container import (
    CONTAINER_MODELS_DIR,
    DockerRuntime,
    ProcessRuntime,
    find_container_cli,
    free_port,
)
from sklearn_mme.harness.metrics import HarnessMetrics, parse_exposition
from sklearn_mme.harness.registry import opaque_name


def test_docker_argv_exact(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    rt = DockerRuntime("localhost/sklearn-mme:test", models, cli="podman", port=23456, name="mme-local-x")
    assert rt.argv() == [
        "podman", "run", "--rm",
        "--name", "mme-local-x",
        "-p", "127.0.0.1:23456:8080",
        "-v", f"{models.resolve()}:/opt/ml/models:ro",
        "-e", "SAGEMAKER_MULTI_MODEL=true",
        "-e", "SAGEMAKER_BIND_TO_PORT=8080",
        "--init",
        "localhost/sklearn-mme:test", "serve",
    ]  # fmt: skip
    assert rt.base_url == "http://127.0.0.1:23456"


def test_docker_argv_container_port_and_model_paths(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    rt = DockerRuntime("img:1", models, cli="docker", port=20001, container_port=9090, name="n")
    argv = rt.argv()
    assert argv[argv.index("-p") + 1] == "127.0.0.1:20001:9090"
    assert "SAGEMAKER_BIND_TO_PORT=9090" in argv
    name = opaque_name("region/eu/model.tar.gz")
    assert rt.model_url(models / name) == f"{CONTAINER_MODELS_DIR}/{name}"
    with pytest.raises(ValueError):
        rt.model_url(tmp_path / "elsewhere")


def test_container_cli_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTAINER_CLI", "podman")
    assert find_container_cli("nerdctl") == "nerdctl"  # --container-cli wins
    assert find_container_cli() == "podman"  # then $CONTAINER_CLI
    monkeypatch.delenv("CONTAINER_CLI")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(RuntimeError, match="no container CLI"):
        find_container_cli()
    for name, status in (("docker", 1), ("podman", 0)):  # a docker CLI whose engine is down
        exe = bin_dir / name
        exe.write_text(f"#!/bin/sh\nexit {status}\n")
        exe.chmod(0o755)
    assert find_container_cli() == "podman"
    (bin_dir / "podman").unlink()
    assert find_container_cli() == "docker"  # the only one found


def test_process_runtime_env(tmp_path: Path) -> None:
    rt = ProcessRuntime(work_dir=tmp_path / "c", env={"MME_EXTRA": "1"})
    env = rt.build_env(24000)
    assert env["SAGEMAKER_BIND_TO_PORT"] == "24000"
    assert env["SAGEMAKER_MULTI_MODEL"] == "true"
    assert Path(env["TMPDIR"]).is_dir() and len(env["TMPDIR"]) < 30  # short: unix socket paths go there
    rt.stop()
    assert not Path(env["TMPDIR"]).exists()
    assert env["MME_EXTRA"] == "1"
    assert rt.serve_cmd[-2:] == ["-m", "sklearn_mme.container.server"]  # works from a wheel, no checkout
    assert rt.model_url(tmp_path / "x") == str((tmp_path / "x").resolve())


def test_free_port_is_below_mms_limit() -> None:
    for _ in range(20):
        assert 20000 <= free_port() <= 32767


def test_opaque_names_are_stable_hashes() -> None:
    assert opaque_name("a.tar.gz") == opaque_name("a.tar.gz") != opaque_name("b.tar.gz")
    assert "/" not in opaque_name("region/eu/model.tar.gz") and len(opaque_name("x")) == 40


def test_metric_names_exposed() -> None:
    m = HarnessMetrics()
    m.cache_hit.labels("a.tar.gz").inc()
    m.cache_miss.labels("a.tar.gz").inc(2)
    for hist in (m.loading_wait, m.downloading, m.loading, m.unloading):
        hist.labels("a.tar.gz").observe(0.1)
    m.loaded_models.set(1)
    text = m.exposition().decode()
    for name, kind in [
        ("mme_loaded_model_count", "gauge"),
        ("mme_model_cache_hit_total", "counter"),
        ("mme_model_cache_miss_total", "counter"),
        ("mme_model_loading_wait_seconds", "histogram"),
        ("mme_model_downloading_seconds", "histogram"),
        ("mme_model_loading_seconds", "histogram"),
        ("mme_model_unloading_seconds", "histogram"),
    ]:
        assert f"# TYPE {name} {kind}" in text, name
    samples = parse_exposition(text)
    assert samples[("mme_model_cache_miss_total", (("model", "a.tar.gz"),))] == 2
    assert samples[("mme_model_loading_seconds_count", (("model", "a.tar.gz"),))] == 1
    assert samples[("mme_loaded_model_count", ())] == 1
    assert HarnessMetrics().exposition()  # each harness has its own registry: no duplicate-name error


# ---- CLI: store commands and bad input ----


def test_cli_package_add_list_remove(tmp_path: Path) -> None:
    runner = CliRunner()
    src = tmp_path / "m"
    src.mkdir()
    (src / "model.joblib").write_bytes(b"x" * 100)
    store = str(tmp_path / "store")
    out = runner.invoke(main, ["package", str(src), "-o", str(tmp_path / "m.tar.gz")])
    assert out.exit_code == 0, out.output
    with tarfile.open(tmp_path / "m.tar.gz") as tar:
        assert sorted(tar.getnames()) == ["mme-manifest.json", "model.joblib"]
    assert runner.invoke(main, ["add", str(src), "--model-store", store]).exit_code == 0
    out = runner.invoke(
        main, ["add", str(tmp_path / "m.tar.gz"), "--model-store", store, "--key", "region/eu/model.tar.gz"]
    )
    assert out.exit_code == 0, out.output
    out = runner.invoke(main, ["list", "--model-store", store])
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["m.tar.gz", "region/eu/model.tar.gz"]
    assert all(line.rstrip().endswith("B") for line in lines)  # sizes shown
    assert runner.invoke(main, ["remove", "m.tar.gz", "--model-store", store]).exit_code == 0
    out = runner.invoke(main, ["list", "--model-store", store])
    assert [line.split()[0] for line in out.stdout.splitlines()] == ["region/eu/model.tar.gz"]
    out = runner.invoke(main, ["remove", "m.tar.gz", "--model-store", store])
    assert out.exit_code == 1 and "not in" in out.output


def test_cli_add_refuses_unsafe_archive(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        tar.addfile(info)
    out = CliRunner().invoke(main, ["add", str(evil), "--model-store", str(tmp_path / "store")])
    assert out.exit_code == 1
    assert "leaving the archive root" in out.output and "Traceback" not in out.output
    assert not (tmp_path / "store" / "evil.tar.gz").exists()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["serve", "--model-store", "/tmp", "--memory-budget", "lots"], "not a size"),
        (["serve", "--model-store", "/tmp", "--max-models", "0"], "max-models"),
        (["serve", "--model-store", "/tmp", "--runtime", "docker"], "needs --image"),
        (["serve", "--model-store", "gs://b/p", "--port", "1"], "unsupported model store"),
        (["add", "/nonexistent", "--model-store", "/tmp"], "does not exist"),
        (["add", "{src}", "--model-store", "{store}", "--key", "../up.tar.gz"], "'..'"),
        (["invoke", "-m", "a.tar.gz", "-b", "1", "--endpoint-url", "http://127.0.0.1:9"], "cannot reach"),
        (["invoke", "-m", "a.tar.gz", "-b", "@/nonexistent"], "cannot read"),
    ],
)
def test_cli_bad_input_is_one_line(tmp_path: Path, args: list[str], needle: str) -> None:
    src = tmp_path / "m"
    src.mkdir()
    (src / "model.joblib").write_bytes(b"x")
    args = [a.format(src=src, store=tmp_path / "store") for a in args]
    out = CliRunner().invoke(main, args)
    assert out.exit_code in (1, 2), out.output
    assert needle in out.output
    assert "Traceback" not in out.output


def test_package_default_name(tmp_path: Path) -> None:
    f = tmp_path / "clf.joblib"
    f.write_bytes(b"x")
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        out = CliRunner().invoke(main, ["package", str(f)])
    finally:
        os.chdir(cwd)
    assert out.exit_code == 0 and (tmp_path / "clf.tar.gz").is_file()
