"""Client of the container's MME API (the calls SageMaker makes): load, list, describe, unload, invoke."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

LOAD_TIMEOUT = 300.0  # a model load may import heavy code; SageMaker allows minutes
INVOKE_TIMEOUT = 60.0  # SageMaker's per-invocation limit


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: dict[str, str]

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "application/octet-stream")

    def text(self, limit: int = 2000) -> str:
        return self.body[:limit].decode("utf-8", errors="replace")

    def message(self) -> str:
        """The short message from an MMS JSON error body, else the body text."""
        try:
            import json

            data = json.loads(self.body)
            if isinstance(data, dict) and "message" in data:
                return str(data["message"])
        except ValueError:
            pass
        return self.text()


class MMEClient:
    """One requests.Session (urllib3's pool is thread-safe) with enough connections for concurrent callers."""

    def __init__(self, base_url: str, pool_size: int = 64) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        # One retry when a pooled keep-alive connection turns out to be closed by the server (a reset before
        # any answer); never on an answer, whatever its status.
        retry = Retry(
            total=1, connect=1, read=1, status=0, other=0, allowed_methods=None, raise_on_status=False
        )
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)
        self.session.mount("http://", adapter)

    def _url(self, path: str) -> str:
        return self.base_url + path

    @staticmethod
    def _answer(resp: requests.Response) -> Answer:
        return Answer(resp.status_code, resp.content, {k.lower(): v for k, v in resp.headers.items()})

    def ping(self, timeout: float = 2.0) -> bool:
        try:
            return self.session.get(self._url("/ping"), timeout=timeout).status_code == 200
        except requests.RequestException:
            return False

    def load(self, name: str, url: str, timeout: float = LOAD_TIMEOUT) -> Answer:
        resp = self.session.post(self._url("/models"), json={"model_name": name, "url": url}, timeout=timeout)
        return self._answer(resp)

    def list_models(self, page_size: int = 100) -> list[dict]:
        """All loaded models, following next_page_token."""
        models: list[dict] = []
        token = None
        while True:
            params: dict[str, str | int] = {"limit": page_size}
            if token:
                params["next_page_token"] = token
            resp = self.session.get(self._url("/models"), params=params, timeout=30)
            resp.raise_for_status()
            data = resp.json()
            models.extend(data.get("models", []))
            token = data.get("nextPageToken") or data.get("next_page_token")
            if not token:
                return models

    def describe(self, name: str) -> Answer:
        return self._answer(self.session.get(self._url(f"/models/{quote(name, safe='')}"), timeout=30))

    def unload(self, name: str, timeout: float = 120.0) -> Answer:
        return self._answer(
            self.session.delete(self._url(f"/models/{quote(name, safe='')}"), timeout=timeout)
        )

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str | None = None,
        accept: str | None = None,
        custom_attributes: str | None = None,
        timeout: float = INVOKE_TIMEOUT,
        target_model: str | None = None,
    ) -> Answer:
        headers: dict[str, str | bytes] = {}
        if target_model is not None:  # as SageMaker sends it: the container labels its metrics with it
            # UTF-8 bytes: a TargetModel may hold any printable character, which latin-1 cannot carry.
            headers["X-Amzn-SageMaker-Target-Model"] = target_model.encode("utf-8")
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        if custom_attributes is not None:
            headers["X-Amzn-SageMaker-Custom-Attributes"] = custom_attributes
        resp = self.session.post(
            self._url(f"/models/{quote(name, safe='')}/invoke"), data=body, headers=headers, timeout=timeout
        )
        return self._answer(resp)

    def close(self) -> None:
        self.session.close()
