"""Loading and unloading a model in the container, as SageMaker does it: `POST /models` until the container
says yes or no, `DELETE /models/{name}`.

- 507 (no room): the caller makes room (`on_full`, which unloads the least recently used model, waits, or
  gives up by raising) and the load is sent again.
- 409 (the name is registered): never taken as loaded. The container is asked what it holds
  (`GET /models/{name}`): a registration without a ready worker is a failed load on its way out (MMS may
  answer a failed load before it unregisters the name), so wait for it to go; one that stays, or a ready
  one the harness did not load just now (its files may predate this artifact), is unloaded; then load again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import requests

from sklearn_mme.harness.container import ContainerRuntime
from sklearn_mme.harness.errors import InternalFailure, ModelError
from sklearn_mme.harness.mme_client import Answer, MMEClient

log = logging.getLogger("mme_local.container_loads")

SETTLE_S = 2.0  # how long a registration without a ready worker may take to go away after a failed load
POLL_S = 0.02
MAX_CONFLICTS = 5  # 409s in a row for one load before giving up


class ContainerLoads:
    def __init__(self, client: MMEClient, runtime: ContainerRuntime) -> None:
        self.client = client
        self.runtime = runtime

    def load(self, name: str, key: str, directory: Path, on_full: Callable[[Answer], None]) -> float:
        """POST /models for `name` until the container loads it; the seconds of the load that succeeded."""
        url = self.runtime.model_url(directory)
        conflicts = 0
        while True:
            t0 = time.monotonic()
            try:
                answer = self.client.load(name, url)
            except requests.RequestException as err:
                raise InternalFailure(f"the container did not answer the load of {key}: {err}") from None
            seconds = time.monotonic() - t0
            if answer.status in (200, 201):
                return seconds
            if answer.status == 507:
                on_full(answer)
            elif answer.status == 409 and conflicts < MAX_CONFLICTS:
                conflicts += 1
                self._clear_registration(name, key)
            elif answer.status == 404:
                raise InternalFailure(f"the container cannot see the model directory {url}")
            else:
                reason = answer.message()  # the plugin puts the backend's reason in the body
                raise ModelError(
                    f"Failed to load model {key}: the container answered {answer.status} "
                    f'with message "{reason}"',
                    answer.status,
                    answer.text(),
                )

    def _clear_registration(self, name: str, key: str) -> None:
        """After a 409: return once the container no longer holds `name` (waiting for a failed load's
        registration to go, else unloading what it holds)."""
        deadline = time.monotonic() + SETTLE_S
        while True:
            ready = self._ready(name)
            if ready is None:
                return
            if ready or time.monotonic() > deadline:
                log.warning(
                    "the container holds %s (%s) though the harness did not load it; unloading it",
                    key,
                    "ready" if ready else "no ready worker",
                )
                self.unload(name, key)
                return
            time.sleep(POLL_S)

    def _ready(self, name: str) -> bool | None:
        """None: the container does not hold `name`; else whether it has a ready worker for it."""
        try:
            answer = self.client.describe(name)
        except requests.RequestException as err:
            raise InternalFailure(f"the container did not answer GET /models/{name}: {err}") from None
        if answer.status == 404:
            return None
        if answer.status != 200:
            return False
        try:
            data = json.loads(answer.body)
        except ValueError:
            return False
        workers = data.get("workers") if isinstance(data, dict) else None
        return any(isinstance(w, dict) and w.get("status") == "READY" for w in workers or [])

    def unload(self, name: str, key: str) -> float:
        """DELETE /models/{name}; the seconds it took. Failures are logged: the model is gone either way
        as far as the harness can do anything about it."""
        t0 = time.monotonic()
        try:
            answer = self.client.unload(name)
            if answer.status not in (200, 202, 204, 404):
                log.warning("unloading %s: container answered %s %s", key, answer.status, answer.text(200))
        except requests.RequestException as err:
            log.warning("unloading %s failed: %s", key, err)
        return time.monotonic() - t0
