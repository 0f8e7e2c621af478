"""Settings of the serving container: every variable a user may set, defined once and checked at start-up.

`container/serve` builds `ServeSettings` before anything starts; a bad value exits 2 with one line naming the
variable. SageMaker's own variables (SAGEMAKER_*) keep their documented meaning; MME_* are ours; the handler's
own (handler/settings.py) are checked here too. What serve's children need (zygote, launchers, workers) is
handed down already validated under a private `_MME_` prefix (`Wiring`): those are not settings.
`python -m sklearn_mme.container.settings` prints the README's settings table.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from sklearn_mme.handler import settings as handler_settings
from sklearn_mme.handler.settings import EnvVar, SettingsError

__all__ = ["EnvVar", "ServeSettings", "SettingsError", "VARIABLES", "Wiring", "parse_size"]

# MMS's Java front rejects ports from 32768 up ("Invalid port number"); say so up front.
MAX_MMS_PORT = 32767
BACKENDS = ("zygote", "hosts", "vanilla")
LAUNCHERS = ("auto", "c", "python")
LOG_LEVELS = ("off", "fatal", "error", "warn", "info", "debug", "trace", "all")  # log4j2's
_MB = 1024 * 1024

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """'512MB' -> 512_000_000, '2GiB' -> 2_147_483_648, '1000' -> 1000. Raises ValueError with a hint.

    The one size parser: the container's settings and the harness's options (`--memory-budget`) both use it.
    """
    match = _SIZE_RE.match(str(text))
    unit = match.group(2).lower() if match else None
    if not match or unit not in _UNITS:
        raise ValueError(f"not a size: {text!r} (use e.g. 512MB, 2GiB or a number of bytes)")
    value = float(match.group(1)) * _UNITS[unit]
    if value < 1:
        raise ValueError(f"size must be at least 1 byte: {text!r}")
    return int(value)


# ---- parsers: text -> value, or ValueError with a reason that follows "NAME='text' " -----------------------

def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError:
        raise ValueError("is not a size (use e.g. 512MB, 2GiB or a number of bytes)") from None


def _whole(lo: int, hi: int, what: str = "a whole number") -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ValueError(f"is not {what}") from None
        if not lo <= value <= hi:
            raise ValueError(f"is out of range {lo}..{hi}")
        return value

    return parse


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in options:
            raise ValueError(f"is not one of {', '.join(options)}")
        return text.lower()

    return parse


def _port(text: str) -> int:
    value = _whole(1, 65535, "a port number")(text)
    if value > MAX_MMS_PORT:
        raise ValueError(f"is too high: multi-model-server only accepts ports 1..{MAX_MMS_PORT}")
    return value


def _executable(text: str) -> str:
    found = shutil.which(text)
    if found is None:
        raise ValueError("is not an executable file")
    return found


def _handler(text: str) -> str:
    module, _, function = text.partition(":")
    if not module.strip() or not function.isidentifier():
        raise ValueError("is not MODULE:FUNCTION (e.g. sklearn_mme.container.mms_entry:handle)")
    return text


def _java_opts(text: str) -> tuple[str, ...]:
    try:
        return tuple(shlex.split(text))
    except ValueError as exc:  # an unbalanced quote
        raise ValueError(f"cannot be split into options ({exc})") from None


def _stage_log(text: str) -> str:
    if not os.path.isabs(text) or not os.path.isdir(os.path.dirname(text)):
        raise ValueError("is not an absolute path in an existing directory")
    return text


_EMF_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-/#:]{1,255}$")
_EMF_DIM_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,250}$")


def _emf_namespace(text: str) -> str:
    if not _EMF_NAME_RE.match(text):
        raise ValueError("is not a CloudWatch namespace (1-255 of letters, digits, . - _ / # :)")
    return text


def _emf_dimensions(text: str) -> tuple[tuple[str, str], ...]:
    """'EndpointName=e,Stage=prod' -> (('EndpointName', 'e'), ('Stage', 'prod')); at most 29 (EMF: 30)."""
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, eq, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not eq or not _EMF_DIM_RE.match(name) or not value or len(value) > 1024 or name == "Model":
            raise ValueError(f"has {item!r}, not Name=value (Model is set per line)")
        out.append((name, value))
    if len(out) > 29:
        raise ValueError("has more than 29 dimensions (EMF allows 30 with Model)")
    return tuple(out)


_JAVA_OPTS = (
    # G1, whose heap our MMS plugin shrinks back with one full GC once a burst of loads, unloads or
    # traffic has been quiet for 3 s (HeapTrim.java; G1's own periodic GC repeated it every 3 s for ever,
    # 100-400 ms each at 1,000 models, in the way of /metrics scrapes); a small initial heap; both JIT tiers
    # (C1 only saved 6-22 MB of code cache once, but left the front's hot path ~20% slower: bench/README.md,
    # "Latency mode"); unpooled Netty buffers, whose pools otherwise keep what a burst allocated; and a
    # periodic malloc_trim, which gives back the native memory of the threads hundreds of models used.
    # Measured with 30 models: Java idle 113 -> ~60 MB, ~2 -> ~0.9 MB per loaded model.
    "-XX:+UseG1GC -Xss512k"
    " -XX:-UsePerfData -Xms8m -XX:MaxHeapFreeRatio=20 -XX:MinHeapFreeRatio=5"
    " -Dio.netty.allocator.type=unpooled -XX:TrimNativeHeapInterval=2000"
)

PORT = EnvVar("SAGEMAKER_BIND_TO_PORT", _port, "8080",
              "port of both the invoke and the management API (MMS accepts 1..32767 only)")
WORKERS = EnvVar("SAGEMAKER_MODEL_SERVER_WORKERS", _whole(1, 64), "1", "workers (processes) per model")
MAX_WORKERS_PER_MODEL = EnvVar(
    "MME_MAX_WORKERS_PER_MODEL", _whole(0, 64), "",
    "workers a busy model may grow to by itself (see How worker count follows load); `0` or `1`: off, a "
    "model keeps SAGEMAKER_MODEL_SERVER_WORKERS. Not with `MME_BACKEND=vanilla`", "usable cores")
SCALE_UP_WAIT = EnvVar("MME_SCALE_UP_WAIT_MS", _whole(0, 60_000), "50",
                       "a model gets one more worker once all of its workers have been busy this long (and "
                       "fewer requests than cores are in flight)")
SCALE_DOWN_IDLE = EnvVar("MME_SCALE_DOWN_IDLE_SECONDS", _whole(1, 86_400), "60",
                         "a model that grew goes back to its minimum after this long without a request")
TIMEOUT = EnvVar("SAGEMAKER_MODEL_SERVER_TIMEOUT_SECONDS", _whole(1, 3600), "60",
                 "response timeout per request, in seconds")
STARTUP = EnvVar("SAGEMAKER_STARTUP_TIMEOUT", _whole(1, 3600), "120",
                 "seconds the pre-warmed zygote may take to start")
BACKEND = EnvVar("MME_BACKEND", _choice(BACKENDS), "hosts",
                 "`hosts`: small models share a few pre-warmed host processes (MME_HOSTS); `zygote`: a "
                 "forked worker per model; `vanilla`: a fresh Python per model, as stock MMS does (for "
                 "comparison)")
HOSTS = EnvVar("MME_HOSTS", _whole(1, 256), "",
               "with `MME_BACKEND=hosts`: how many shared host processes serve the small models",
               "usable cores")
HOST_MAX_ARTIFACT = EnvVar("MME_HOST_MAX_ARTIFACT", _size, "8MiB",
                           "with `MME_BACKEND=hosts`: a model whose files on disk add up to more gets its "
                           "own process (so a slow big model does not hold up a host's other models)")
HOST_SLOW_MS = EnvVar("MME_HOST_SLOW_MS", _whole(0, 3_600_000), "20",
                      "with `MME_BACKEND=hosts`: a hosted model whose predicts hold its host longer than "
                      "this (ms; median of its last 5, waits for a CPU not counted) moves to a process of "
                      "its own, so it does not hold up its host's other models; 0: never")
LAUNCHER = EnvVar("MME_LAUNCHER", _choice(LAUNCHERS), "auto",
                  "`c` or `python` per-model launcher (`auto`: C when built)")
LAUNCHER_BIN = EnvVar("MME_LAUNCHER_BIN", _executable, "",
                      "the compiled launcher to use instead of the built one",
                      "container/lib/mme-launcher")
SPARE_LAUNCHERS = EnvVar("MME_SPARE_LAUNCHERS", _whole(0, 64), "2",
                         "C launchers started ahead of the loads that will need them, each of which then "
                         "skips MMS's start of a process (~1.5 ms of a cold load); 0: MMS starts one per "
                         "load")
WARMUP_LOADS = EnvVar("MME_WARMUP_LOADS", _whole(0, 10_000), "100",
                      "loads of a built-in tiny model the container runs at start-up, before `GET /ping` "
                      "answers 200, so that its first real loads find the JVM's load path compiled (about "
                      "2 s of start-up); 0: none. Not with `MME_BACKEND=vanilla`")
MEMORY_BUDGET = EnvVar("MME_MEMORY_BUDGET", _size, "",
                       "bytes all loaded models may hold (e.g. `2GiB`); a load past it answers 507. "
                       "Unset: 507 when the machine's available memory is short")
MEMORY_RESERVE = EnvVar("MME_MEMORY_RESERVE_MB", _whole(0, 1024 * 1024), "64",
                        "without a budget: MB of available memory a load must leave (else 507)")
WORKER_LIMIT = EnvVar("MME_WORKER_MEMORY_LIMIT", _size, "",
                      "what one worker, or one shared host, may allocate beyond the zygote's pages (e.g. "
                      "`1GB`); past it a request answers 507 instead of drawing the OOM killer")
HANDLER = EnvVar("MME_HANDLER", _handler, "sklearn_mme.container.mms_entry:handle",
                 "the MMS service handler, MODULE:FUNCTION")
JAVA_OPTS = EnvVar("MME_JAVA_OPTS", _java_opts, _JAVA_OPTS,
                   "options of MMS's Java front (they replace the defaults entirely)",
                   "G1 for a small heap (container/settings.py)")
LOG_LEVEL = EnvVar("MME_LOG_LEVEL", _choice(LOG_LEVELS), "info", "log level of MMS's Java front")
ACCESS_LOG_LEVEL = EnvVar("MME_ACCESS_LOG_LEVEL", _choice(LOG_LEVELS), "warn",
                          "log level of MMS's access log (`info`: one line per request)")
METRICS_MAX_MODELS = EnvVar("MME_METRICS_MAX_MODELS", _whole(1, 100_000), "500",
                            "models with their own series in `GET /metrics` (and EMF); past it new models "
                            "count under `model=\"other\"`")
IDLE_CONNECTION_TIMEOUT = EnvVar("MME_IDLE_CONNECTION_TIMEOUT_SECONDS", _whole(1, 86_400), "60",
                                 "close a client connection with no request under way after N idle seconds "
                                 "(SageMaker's own keep-alive is shorter)")
MAX_CONNECTIONS = EnvVar("MME_MAX_CONNECTIONS", _whole(16, 10_000_000), "",
                         "open client connections kept; past it the longest-idle one is closed for each new "
                         "one, so a descriptor stays free for `/ping`", "half of Java's descriptor limit")
EMF_INTERVAL = EnvVar("MME_EMF_INTERVAL_SECONDS", _whole(1, 86_400), "",
                      "write one CloudWatch EMF line per active model every N seconds to stdout. Unset: "
                      "off (custom metrics cost money per model: see Metrics)")
EMF_NAMESPACE = EnvVar("MME_EMF_NAMESPACE", _emf_namespace, "sklearn-mme",
                       "CloudWatch namespace of the EMF lines")
EMF_DIMENSIONS = EnvVar("MME_EMF_DIMENSIONS", _emf_dimensions, "",
                        "fixed dimensions added beside `Model` to every EMF line, `Name=value,...` "
                        "(e.g. `EndpointName=my-endpoint`)")
STAGE_LOG = EnvVar("MME_STAGE_LOG", _stage_log, "",
                   "append one line of stage timestamps per invoke to this file, for `python -m bench "
                   "--latency`'s breakdown. Unset: off")
PYTHON = EnvVar("MME_PYTHON", _executable, "",
                "the Python `container/serve` runs (checked by the script itself)", "`.venv`, else python3")

# Every user-facing variable, the container's and the handler's: the README table lists exactly these.
VARIABLES: tuple[EnvVar, ...] = (
    PORT, WORKERS, MAX_WORKERS_PER_MODEL, SCALE_UP_WAIT, SCALE_DOWN_IDLE, TIMEOUT,
    handler_settings.MAX_PAYLOAD, handler_settings.DEFAULT_ACCEPT,
    handler_settings.DEFAULT_CONTENT, STARTUP, BACKEND, HOSTS, HOST_MAX_ARTIFACT, HOST_SLOW_MS,
    LAUNCHER, LAUNCHER_BIN, SPARE_LAUNCHERS, WARMUP_LOADS,
    MEMORY_BUDGET, MEMORY_RESERVE, WORKER_LIMIT, handler_settings.SKOPS_TRUSTED, handler_settings.PROGRAM,
    handler_settings.VERSION_SKEW, HANDLER, JAVA_OPTS, LOG_LEVEL, ACCESS_LOG_LEVEL, METRICS_MAX_MODELS,
    IDLE_CONNECTION_TIMEOUT, MAX_CONNECTIONS, EMF_INTERVAL, EMF_NAMESPACE, EMF_DIMENSIONS, STAGE_LOG, PYTHON,
)


@dataclass(frozen=True)
class ServeSettings:
    port: int
    workers_per_model: int
    max_workers_per_model: int | None
    scale_up_wait_ms: int
    scale_down_idle_s: int
    response_timeout_s: int
    startup_timeout_s: int
    backend: str
    hosts: int | None
    host_max_artifact_bytes: int
    host_slow_ms: int
    launcher: str
    launcher_bin: str | None
    spare_launchers: int
    warmup_loads: int
    memory_budget_bytes: int | None
    memory_reserve_bytes: int
    worker_memory_limit_bytes: int | None
    handler: str
    java_opts: tuple[str, ...]
    metrics_max_models: int
    idle_connection_timeout_s: int
    max_connections: int | None
    emf_interval_s: int | None
    emf_namespace: str
    emf_dimensions: tuple[tuple[str, str], ...] | None
    stage_log: str | None
    handler_settings: handler_settings.Settings  # checked here, read again by each worker

    @property
    def max_payload_bytes(self) -> int:
        return self.handler_settings.max_payload_bytes

    @property
    def max_response_bytes(self) -> int:
        """MMS's frame limit for an answer: room for a response several times the request's size."""
        return self.max_payload_bytes * 4

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServeSettings:
        """Read and check every variable; the first bad one raises SettingsError naming it."""
        env = os.environ if environ is None else environ
        for var in (LOG_LEVEL, ACCESS_LOG_LEVEL, PYTHON):
            var.read(env)  # read by log4j2 and by the serve script, not by Python: checked all the same
        return cls(
            port=PORT.read(env),
            workers_per_model=WORKERS.read(env),
            max_workers_per_model=MAX_WORKERS_PER_MODEL.read(env),
            scale_up_wait_ms=SCALE_UP_WAIT.read(env),
            scale_down_idle_s=SCALE_DOWN_IDLE.read(env),
            response_timeout_s=TIMEOUT.read(env),
            startup_timeout_s=STARTUP.read(env),
            backend=BACKEND.read(env),
            hosts=HOSTS.read(env),
            host_max_artifact_bytes=HOST_MAX_ARTIFACT.read(env),
            host_slow_ms=HOST_SLOW_MS.read(env),
            launcher=LAUNCHER.read(env),
            launcher_bin=LAUNCHER_BIN.read(env),
            spare_launchers=SPARE_LAUNCHERS.read(env),
            warmup_loads=WARMUP_LOADS.read(env),
            memory_budget_bytes=MEMORY_BUDGET.read(env),
            memory_reserve_bytes=MEMORY_RESERVE.read(env) * _MB,
            worker_memory_limit_bytes=WORKER_LIMIT.read(env),
            handler=HANDLER.read(env),
            java_opts=JAVA_OPTS.read(env),
            metrics_max_models=METRICS_MAX_MODELS.read(env),
            idle_connection_timeout_s=IDLE_CONNECTION_TIMEOUT.read(env),
            max_connections=MAX_CONNECTIONS.read(env),
            emf_interval_s=EMF_INTERVAL.read(env),
            emf_namespace=EMF_NAMESPACE.read(env),
            emf_dimensions=EMF_DIMENSIONS.read(env),
            stage_log=STAGE_LOG.read(env),
            handler_settings=handler_settings.Settings.from_env(env),
        )


@dataclass(frozen=True)
class Wiring:
    """What serve hands its children through the environment, already validated: `_MME_<FIELD>`.

    The leading underscore keeps these apart from the settings above; users never set them.
    """

    state_dir: str | None = None  # the memory ledger's directory (container/ledger.py)
    zygote_socket: str | None = None  # where launchers reach the zygote
    max_response_bytes: int = 24 * _MB  # MMS's max_response_size
    memory_budget_bytes: int | None = None
    memory_reserve_bytes: int = 64 * _MB
    worker_memory_limit_bytes: int | None = None
    host_count: int | None = None  # MME_BACKEND=hosts: this many host processes (container/hosts.py)
    host_max_artifact_bytes: int | None = None
    host_slow_ms: int | None = None  # host_loop.py: a slower hosted model moves out; 0 is never
    # Read by our MMS plugin (container/java, ContainerMetrics and EmfWriter), not by Python.
    metrics_max_models: int | None = None
    idle_connection_timeout_s: int | None = None  # RequestGuardInstaller
    max_connections: int | None = None  # ConnectionCap
    emf_interval_s: int | None = None
    emf_namespace: str | None = None
    emf_dimensions: str | None = None  # Name=value,...
    scale_max_workers: int | None = None  # WorkerScaler: 0 is off
    scale_up_wait_ms: int | None = None
    scale_down_idle_s: int | None = None
    stage_log: str | None = None  # container/stage_clock.py
    spare_launchers: int | None = None  # SpareLaunchers: 0 unless the launcher is the C one
    warmup_loads: int | None = None  # Warmup.java: 0 with vanilla MMS
    warmup_model: str | None = None  # the directory the zygote writes the warm-up's model to (warmup.py)

    @staticmethod
    def env_name(field_name: str) -> str:
        return "_MME_" + field_name.upper()

    def to_env(self) -> dict[str, str]:
        return {self.env_name(f.name): str(getattr(self, f.name)) for f in fields(self)
                if getattr(self, f.name) is not None}

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Wiring:
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(cls.env_name(f.name))
            if raw:
                numeric = f.name.endswith(("_bytes", "_s", "_ms", "_models", "_connections", "_count",
                                           "_workers", "_launchers", "_loads"))
                values[f.name] = int(raw) if numeric else raw
        return cls(**values)


def markdown_table() -> str:
    """The README's settings table, from VARIABLES."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for var in VARIABLES:
        default = var.shown_default if var.shown_default is not None else var.default or "unset"
        rows.append(f"| `{var.name}` | {default} | {var.doc} |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.stdout.write(markdown_table() + "\n")
