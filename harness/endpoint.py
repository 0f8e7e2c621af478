"""An endpoint of several instances behind one runtime API, as SageMaker runs a multi-instance MME.

Each instance is what `mme-local serve` plays alone: its own container (started as harness/container.py
starts one), disk cache, model registry with its own LRU and limits, and metrics. routing.py picks the
instance for each request. An instance whose container dies is out of routing at once (a request under way
there is sent to another instance) and is replaced in the background, as SageMaker replaces a failed
instance; it comes back empty.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from sklearn_mme.harness.app import HarnessConfig, make_runtime
from sklearn_mme.harness.artifacts import ArtifactCache
from sklearn_mme.harness.endpoint_metrics import EndpointMetrics, InstanceSeries
from sklearn_mme.harness.errors import InternalFailure, RuntimeApiError, ValidationError
from sklearn_mme.harness.manager import InvokeResult, ManagerConfig, ModelManager
from sklearn_mme.harness.metrics import HarnessMetrics
from sklearn_mme.harness.mme_client import MMEClient
from sklearn_mme.harness.routing import InstanceView, Router
from sklearn_mme.harness.runtime_api import RuntimeApiServer
from sklearn_mme.harness.store import InvalidKey, Store, open_store, validate_key

log = logging.getLogger("mme_local.endpoint")

DEFAULT_HOT_RATE = 20.0  # requests per second per instance holding a model before it spreads (routing.py)
MAX_RESTARTS = 5


class Instance:
    """One instance: a container and the SageMaker-side state for it."""

    def __init__(self, index: int, cfg: HarnessConfig, store: Store, work_dir: Path,
                 container_env: dict[str, str]) -> None:
        self.index = index
        self.cfg = cfg
        self.store = store
        self.work_dir = work_dir / f"instance-{index}"
        self.models_dir = self.work_dir / "models"
        self.models_dir.mkdir(parents=True, exist_ok=True)
        self.models_dir.chmod(0o755)  # mounted into the image, read there by a non-root user
        self.metrics = HarnessMetrics()
        self.artifacts = ArtifactCache(store, self.work_dir / "artifacts", cfg.artifact_cache_bytes)
        self.runtime = make_runtime(cfg, self.models_dir, self.work_dir, container_env)
        self.client: MMEClient | None = None
        self.manager: ModelManager | None = None
        self.inflight = 0  # requests routed here and not answered yet (the endpoint's lock)
        self.in_service = False
        self.restarts = 0

    def start(self) -> None:
        url = self.runtime.start(self.cfg.container_start_timeout)
        self.client = MMEClient(url)
        limits = ManagerConfig(max_models=self.cfg.max_models, memory_budget=self.cfg.memory_budget,
                               wait_limit=self.cfg.wait_limit)
        self.manager = ModelManager(self.store, self.artifacts, self.runtime, self.client, self.models_dir,
                                    self.metrics, limits)
        self.in_service = True

    def live(self) -> bool:
        return self.in_service and self.runtime.alive()

    def replace(self) -> None:
        """The container died: forget what it held and start a new one."""
        self.in_service = False
        assert self.manager is not None and self.client is not None
        self.manager.forget_all()
        self.client.base_url = self.runtime.start(self.cfg.container_start_timeout).rstrip("/")
        self.in_service = True

    def series(self) -> InstanceSeries:
        url = self.client.base_url if self.client is not None and self.live() else None
        return InstanceSeries(self.index, self.metrics, url)

    def state(self) -> dict:
        if self.manager is None:
            return {"instance": self.index, "in_service": False}
        return {"instance": self.index, "in_service": self.live(), **self.manager.state()}

    def stop(self) -> None:
        self.in_service = False
        self.runtime.stop()
        if self.client is not None:
            self.client.close()


class Endpoint:
    """Start with start() (or `with Endpoint(...) as e:`); `url` is then the runtime API's base URL."""

    def __init__(self, config: HarnessConfig, instances: int, hot_rate: float = DEFAULT_HOT_RATE,
                 container_env: dict[str, str] | None = None, store: Store | None = None) -> None:
        if instances < 1:
            raise ValueError("an endpoint needs at least one instance")
        if config.runtime == "external":
            raise ValueError("--instances needs containers the harness starts (--runtime process or docker)")
        if config.runtime == "docker" and not config.image:
            raise ValueError("--runtime docker needs --image")
        self.config = config
        self.store = store or open_store(config.model_store, config.s3_endpoint_url)
        self._own_work_dir = config.work_dir is None
        self.work_dir = Path(config.work_dir or tempfile.mkdtemp(prefix="mme-local-")).resolve()
        self.instances = [Instance(i, config, self.store, self.work_dir, dict(container_env or {}))
                          for i in range(instances)]
        self.router = Router(hot_rate)
        self.metrics = EndpointMetrics(lambda: [i.series() for i in self.instances])
        self.server: RuntimeApiServer | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.failed = threading.Event()  # set when an instance died and could not be replaced

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("endpoint not started")
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        cfg = self.config
        try:
            # Bind first: a taken port fails before the containers cost seconds each.
            self.server = RuntimeApiServer((cfg.host, cfg.port), None, self.metrics,  # type: ignore[arg-type]
                                           cfg.endpoint_name)
            with ThreadPoolExecutor(len(self.instances)) as pool:
                for done in [pool.submit(i.start) for i in self.instances]:
                    done.result()
            self.server.manager = self  # type: ignore[assignment]
            threading.Thread(target=self.server.serve_forever, name="mme-api", daemon=True).start()
            threading.Thread(target=self._watch, name="mme-watchdog", daemon=True).start()
            return self.url
        except BaseException:
            self.stop()
            raise

    # ---- what the runtime API calls -------------------------------------------------------------------

    def invoke(self, key: str, body: bytes, content_type: str | None = None, accept: str | None = None,
               custom_attributes: str | None = None) -> InvokeResult:
        try:
            validate_key(key)
        except InvalidKey as err:
            raise ValidationError(str(err)) from None
        tried: set[int] = set()
        while True:
            instance = self._route(key, tried)
            assert instance.manager is not None
            try:
                result = instance.manager.invoke(key, body, content_type, accept, custom_attributes)
            except RuntimeApiError as err:
                if isinstance(err, InternalFailure) and not instance.runtime.alive():
                    # Its container died under the request: out of routing, the request goes elsewhere.
                    log.warning("instance %d died under a request for %s; routing elsewhere",
                                instance.index, key)
                    instance.in_service = False
                    tried.add(instance.index)
                    continue
                err.instance = instance.index
                raise
            finally:
                with self._lock:
                    instance.inflight -= 1
            return dataclasses.replace(result, instance=instance.index)

    def _route(self, key: str, tried: set[int]) -> Instance:
        with self._lock:
            live = [i for i in self.instances if i.index not in tried and i.live()]
            if not live:
                raise InternalFailure("no instance of the endpoint is in service; try again shortly")
            views = []
            for i in live:
                assert i.manager is not None
                views.append(InstanceView(i.index, i.manager.registry.state(key), i.inflight,
                                          i.manager.registry.count()))
            chosen = self.instances[self.router.choose(key, views)]
            chosen.inflight += 1
            return chosen

    def state(self) -> dict:
        return {"instances": [i.state() for i in self.instances]}

    def describe_container(self) -> str:
        return f"{len(self.instances)} instances: " + "; ".join(i.runtime.describe() for i in self.instances)

    # ---- life -----------------------------------------------------------------------------------------

    def _watch(self) -> None:
        """Replace an instance whose container died, as SageMaker replaces a failed instance."""
        while not self._stopping.wait(1.0):
            for instance in self.instances:
                if self._stopping.is_set() or instance.runtime.alive():
                    continue
                instance.in_service = False
                if instance.restarts >= MAX_RESTARTS:
                    if not self.failed.is_set():
                        log.error("instance %d died %d times; giving up", instance.index, MAX_RESTARTS + 1)
                    self.failed.set()
                    continue
                instance.restarts += 1
                log.warning("instance %d's container exited; replacing it", instance.index)
                try:
                    instance.replace()
                except Exception as err:
                    log.error("replacing instance %d failed: %s", instance.index, err)

    def stop(self) -> None:
        self._stopping.set()
        if self.server is not None:
            if self.server.manager is not None:
                self.server.shutdown()
            self.server.server_close()
        self.server = None
        with ThreadPoolExecutor(len(self.instances)) as pool:
            list(pool.map(lambda i: i.stop(), self.instances))
        if self._own_work_dir and not self.config.keep_work_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Endpoint:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
