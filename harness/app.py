"""The harness put together: store + artifact cache + container runtime + manager + runtime API server."""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from sklearn_mme.harness import container_metrics
from sklearn_mme.harness.artifacts import ArtifactCache
from sklearn_mme.harness.container import (
    ContainerRuntime,
    DockerRuntime,
    ExternalRuntime,
    ProcessRuntime,
)
from sklearn_mme.harness.manager import ManagerConfig, ModelManager
from sklearn_mme.harness.metrics import HarnessMetrics
from sklearn_mme.harness.mme_client import MMEClient
from sklearn_mme.harness.runtime_api import RuntimeApiServer
from sklearn_mme.harness.store import Store, open_store

log = logging.getLogger("mme_local")

RUNTIMES = ("process", "docker", "external")


@dataclass
class HarnessConfig:
    model_store: str
    port: int = 8080
    host: str = "127.0.0.1"
    max_models: int | None = None
    memory_budget: int | None = None
    runtime: str = "process"
    image: str | None = None
    container_port: int = 8080
    container_cli: str | None = None
    container_url: str | None = None  # runtime "external": a container someone else started
    serve_cmd: list[str] | None = None  # runtime "process": what to run instead of container/serve
    s3_endpoint_url: str | None = None
    artifact_cache_bytes: int = 2 * 1024**3
    wait_limit: float = 60.0
    endpoint_name: str | None = None
    work_dir: Path | None = None
    keep_work_dir: bool = False
    container_start_timeout: float = 180.0


def make_runtime(
    cfg: HarnessConfig, models_dir: Path, work_dir: Path, env: dict[str, str] | None = None
) -> ContainerRuntime:
    """The container runtime `cfg` asks for; `env`: extra variables for the container (not `external`)."""
    if cfg.runtime == "docker":
        assert cfg.image is not None
        return DockerRuntime(
            cfg.image, models_dir, cli=cfg.container_cli, container_port=cfg.container_port,
            log_dir=work_dir, env=env,
        )
    if cfg.runtime == "external":
        assert cfg.container_url is not None
        return ExternalRuntime(cfg.container_url)
    return ProcessRuntime(serve_cmd=cfg.serve_cmd, work_dir=work_dir / "container", env=env)


class Harness:
    """Start with start() (or `with Harness(cfg) as h:`); `url` is then the runtime API's base URL."""

    def __init__(self, config: HarnessConfig, store: Store | None = None) -> None:
        if config.runtime not in RUNTIMES:
            raise ValueError(f"unknown runtime {config.runtime!r} (use one of {', '.join(RUNTIMES)})")
        if config.runtime == "docker" and not config.image:
            raise ValueError("--runtime docker needs --image")
        if config.runtime == "external" and not config.container_url:
            raise ValueError("--runtime external needs --container-url")
        self.config = config
        self.store = store or open_store(config.model_store, config.s3_endpoint_url)
        self._own_work_dir = config.work_dir is None
        self.work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="mme-local-")).resolve()
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir = self.work_dir / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir.chmod(0o755)  # mounted into the image, read there by a non-root user
        self.metrics = HarnessMetrics()
        self.artifacts = ArtifactCache(self.store, self.work_dir / "artifacts", config.artifact_cache_bytes)
        self.runtime = make_runtime(config, self.models_dir, self.work_dir)
        self.client: MMEClient | None = None
        self.manager: ModelManager | None = None
        self.server: RuntimeApiServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._watchdog: threading.Thread | None = None
        self.restarts = 0
        self.failed = threading.Event()  # set when the container died and could not be restarted

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("harness not started")
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        cfg = self.config
        try:
            # Bind first: a taken port should fail before we spend seconds starting the container. The server
            # answers nothing until serve_forever runs, after the manager exists.
            self.server = RuntimeApiServer((cfg.host, cfg.port), None, self.metrics, cfg.endpoint_name)
            container_url = self.runtime.start(cfg.container_start_timeout)
            self.client = MMEClient(container_url)
            self.metrics.sources.append(  # the container's own per-model series, in the same scrape
                lambda: container_metrics.scrape(self.client.base_url) if self.client else "")
            self.manager = ModelManager(
                self.store,
                self.artifacts,
                self.runtime,
                self.client,
                self.models_dir,
                self.metrics,
                ManagerConfig(
                    max_models=cfg.max_models, memory_budget=cfg.memory_budget, wait_limit=cfg.wait_limit
                ),
            )
            self.server.manager = self.manager
            self._thread = threading.Thread(target=self.server.serve_forever, name="mme-api", daemon=True)
            self._thread.start()
            self._watchdog = threading.Thread(target=self._watch_container, name="mme-watchdog", daemon=True)
            self._watchdog.start()
            return self.url
        except BaseException:
            self.stop()
            raise

    def _watch_container(self, max_restarts: int = 5) -> None:
        """Restart a container that died, as SageMaker replaces a failed one; loaded models are forgotten
        and load again on their next request."""
        while not self._stopping.wait(1.0):
            if self.runtime.alive() or self._stopping.is_set():
                continue
            if self.restarts >= max_restarts:
                log.error("the container died %d times; giving up", self.restarts + 1)
                self.failed.set()
                return
            self.restarts += 1
            log.warning("the container exited; restarting it (restart %d)", self.restarts)
            assert self.manager is not None and self.client is not None
            self.manager.forget_all()
            try:
                self.client.base_url = self.runtime.start(self.config.container_start_timeout).rstrip("/")
            except Exception as err:
                log.error("restarting the container failed: %s", err)
                self.failed.set()
                return
            log.warning("the container is back on %s", self.client.base_url)

    def describe_container(self) -> str:
        return self.runtime.describe()

    def stop(self) -> None:
        self._stopping.set()
        if self.server is not None and self._thread is not None:
            self.server.shutdown()
        if self.server is not None and getattr(self.server, "socket", None) is not None:
            self.server.server_close()
        self.server = None
        if self.manager is not None:
            self.manager.close()
        self.runtime.stop()
        if self.client is not None:
            self.client.close()
        if self._own_work_dir and not self.config.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Harness:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
