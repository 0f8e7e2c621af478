"""The container's settings: every user-facing variable is checked when `container/serve` starts.

A malformed value must stop the real `container/serve` script with exit status 2 and one line naming the
variable, before anything else starts. JAVA_HOME points nowhere in these runs: had serve got as far as
starting Java, it would fail differently (exit 1, "java not found").
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest

from sklearn_mme.container import settings
from sklearn_mme.container.settings import ServeSettings, SettingsError, Wiring, parse_size
from tests.support import REPO, SERVE

# One malformed value per user-facing variable (the first test makes sure none is missing).
MALFORMED = {
    "SAGEMAKER_BIND_TO_PORT": "40000",
    "SAGEMAKER_MODEL_SERVER_WORKERS": "two",
    "MME_MAX_WORKERS_PER_MODEL": "65",
    "MME_SCALE_UP_WAIT_MS": "-1",
    "MME_SCALE_DOWN_IDLE_SECONDS": "0",
    "SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS": "0",
    "SAGEMAKER_MAX_PAYLOAD_IN_MB": "-1",
    "SAGEMAKER_DEFAULT_INVOCATIONS_ACCEPT": "image/png",
    "MME_DEFAULT_CONTENT_TYPE": "text/html",
    "SAGEMAKER_STARTUP_TIMEOUT": "2m",
    "MME_BACKEND": "torchserve",
    "MME_HOSTS": "0",
    "MME_HOST_MAX_ARTIFACT": "big",
    "MME_HOST_SLOW_MS": "20ms",
    "MME_LAUNCHER": "rust",
    "MME_LAUNCHER_BIN": "/nonexistent/mme-launcher",
    "MME_SPARE_LAUNCHERS": "65",
    "MME_WARMUP_LOADS": "10001",
    "MME_MEMORY_BUDGET": "lots",
    "MME_MEMORY_RESERVE_MB": "64MB",
    "MME_WORKER_MEMORY_LIMIT": "12 parsecs",
    "MME_SKOPS_TRUSTED_TYPES": "sklearn.svm.SVC, not a type",
    "SAGEMAKER_PROGRAM": "code/serve.py",
    "MME_VERSION_SKEW": "strict",
    "MME_HANDLER": "sklearn_mme.container.mms_entry",
    "MME_JAVA_OPTS": "-Dname='unclosed",
    "MME_LOG_LEVEL": "loud",
    "MME_ACCESS_LOG_LEVEL": "verbose",
    "MME_METRICS_MAX_MODELS": "0",
    "MME_IDLE_CONNECTION_TIMEOUT_SECONDS": "0",
    "MME_MAX_CONNECTIONS": "8",
    "MME_EMF_INTERVAL_SECONDS": "1m",
    "MME_EMF_NAMESPACE": "has spaces",
    "MME_EMF_DIMENSIONS": "EndpointName",
    "MME_STAGE_LOG": "stages.log",
    "MME_PYTHON": "/nonexistent/python3",
}


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MME_", "SAGEMAKER_", "_MME_"))}
    return {**env, "JAVA_HOME": "/nonexistent-java", **extra}


def test_every_user_facing_variable_has_a_malformed_case() -> None:
    assert sorted(MALFORMED) == sorted(v.name for v in settings.VARIABLES)


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_serve_rejects_a_malformed_value_with_exit_2_and_one_line(name: str) -> None:
    started = time.monotonic()
    done = subprocess.run([str(SERVE)], env=_clean_env(**{name: MALFORMED[name]}), capture_output=True,
                          text=True, timeout=60)
    elapsed = time.monotonic() - started
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"serve: error: {name}=") and MALFORMED[name] in lines[0]
    assert done.stdout == ""  # nothing started: serve logs its port and run dir once it does
    assert elapsed < 15, f"{elapsed:.1f}s to reject {name}"


def test_serve_gets_past_the_settings_with_good_values() -> None:
    """The control for the test above: valid values of every kind reach the Java start (and fail there)."""
    good = {"MME_MEMORY_BUDGET": "1TB", "MME_WORKER_MEMORY_LIMIT": "512MiB",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "0.5", "MME_LOG_LEVEL": "DEBUG",
            "MME_SKOPS_TRUSTED_TYPES": "sklearn.svm.SVC, numpy.dtype",
            "MME_JAVA_OPTS": "-Dx='a b' -Xss512k", "SAGEMAKER_BIND_TO_PORT": "8081",
            "MME_METRICS_MAX_MODELS": "1000", "MME_EMF_INTERVAL_SECONDS": "60", "MME_EMF_NAMESPACE": "a/b-c",
            "MME_EMF_DIMENSIONS": "EndpointName=ep, Stage=prod", "MME_MAX_WORKERS_PER_MODEL": "0",
            "MME_SCALE_UP_WAIT_MS": "0", "MME_SCALE_DOWN_IDLE_SECONDS": "1"}
    done = subprocess.run([str(SERVE)], env=_clean_env(**good), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "java not found" in done.stderr, done.stderr


def test_values_are_parsed_once_into_typed_settings() -> None:
    s = ServeSettings.from_env({"MME_MEMORY_BUDGET": "1TB", "MME_WORKER_MEMORY_LIMIT": "1.5 KiB",
                                "SAGEMAKER_MAX_PAYLOAD_IN_MB": "2", "MME_JAVA_OPTS": "-Da='x y' -Xss1m",
                                "MME_BACKEND": "Vanilla", "MME_MEMORY_RESERVE_MB": "0"})
    assert s.memory_budget_bytes == 10**12 == parse_size("1TB")
    assert s.worker_memory_limit_bytes == 1536
    assert s.max_payload_bytes == 2 * 1024 * 1024 and s.max_response_bytes == 8 * 1024 * 1024
    assert s.java_opts == ("-Da=x y", "-Xss1m")
    assert s.backend == "vanilla" and s.memory_reserve_bytes == 0
    defaults = ServeSettings.from_env({})
    assert (defaults.port, defaults.workers_per_model, defaults.memory_budget_bytes) == (8080, 1, None)
    assert defaults.max_payload_bytes == 6 * 1024 * 1024
    assert (defaults.metrics_max_models, defaults.emf_interval_s) == (500, None)
    # The policy's ceiling defaults to the usable cores, resolved by serve (container/server.py).
    assert (defaults.max_workers_per_model, defaults.scale_up_wait_ms, defaults.scale_down_idle_s) == \
        (None, 50, 60)
    emf = ServeSettings.from_env({"MME_EMF_INTERVAL_SECONDS": "60",
                                  "MME_EMF_DIMENSIONS": "EndpointName=ep,Stage=b"})
    assert emf.emf_interval_s == 60 and emf.emf_dimensions == (("EndpointName", "ep"), ("Stage", "b"))


def test_the_error_names_the_variable_and_value() -> None:
    with pytest.raises(SettingsError) as info:
        ServeSettings.from_env({"MME_WORKER_MEMORY_LIMIT": "12 parsecs"})
    assert str(info.value) == ("MME_WORKER_MEMORY_LIMIT='12 parsecs' is not a size "
                               "(use e.g. 512MB, 2GiB or a number of bytes)")


def test_wiring_for_child_processes_round_trips_under_a_private_prefix() -> None:
    wiring = Wiring(state_dir="/run/x/ledger", zygote_socket="/run/x/z.sock", max_response_bytes=99,
                    memory_budget_bytes=None, memory_reserve_bytes=0, worker_memory_limit_bytes=2048)
    env = wiring.to_env()
    assert all(name.startswith("_MME_") for name in env)
    assert "_MME_MEMORY_BUDGET_BYTES" not in env  # unset stays unset
    assert Wiring.from_env(env) == wiring
    assert Wiring.from_env({}) == Wiring()


SOURCES = sorted([*(REPO / "container").glob("*.py"), *(REPO / "handler").glob("*.py")])
_READ = re.compile(r"""(environ|getenv)\b[^\n]*?["'](MME_|SAGEMAKER_)""")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_only_the_settings_modules_read_user_variables(path: Path) -> None:
    if path.name == "settings.py":
        return
    reads = [line.strip() for line in path.read_text().splitlines() if _READ.search(line)]
    assert reads == [], f"{path.name} reads a setting itself; define it in container/settings.py"


def test_readme_table_is_the_definition() -> None:
    """Regenerate with: python -m sklearn_mme.container.settings"""
    assert settings.markdown_table() in (REPO / "README.md").read_text()
