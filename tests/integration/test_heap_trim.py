"""The Java front gives its heap back once after a burst (HeapTrim.java), not every 3 s for ever, and where
/metrics is being scraped, right after a scrape rather than in the middle of the next one. Real MMS."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.integration.test_container_metrics import scrape, value
from tests.support import running_serve

TRIMS = "mme_container_java_heap_trims_total"
QUIET_S = 3  # HeapTrim.QUIET_MS, checked once a second


def test_one_trim_per_burst_and_none_while_idle(tmp_path: Path, model_root: Path) -> None:
    with running_serve(tmp_path) as serve:  # `serve` checked /metrics once at start: not a scraper yet
        time.sleep(QUIET_S + 3)  # the start's own trim
        before = value(scrape(serve), TRIMS)  # this scrape is the second one: from now on, scraped
        assert before is not None
        for name in ("a", "b"):
            assert serve.load(name, model_root / "iris_logreg").status_code == 200
            assert serve.invoke(name, "5.1,3.5,1.4,0.2").status_code == 200
            assert serve.unload(name).status_code == 200
        time.sleep(QUIET_S + 3)
        # Quiet long enough, but /metrics is scraped: the trim waits for a scrape and runs after it.
        assert value(scrape(serve), TRIMS) == before
        deadline = time.monotonic() + 10
        while (now := value(scrape(serve), TRIMS)) == before and time.monotonic() < deadline:
            time.sleep(0.2)
        assert now == before + 1
        time.sleep(QUIET_S + 3)  # idle: no more collections (G1's periodic one ran every 3 s)
        assert value(scrape(serve), TRIMS) == before + 1
        assert requests.get(f"{serve.url}/ping", timeout=5).status_code == 200
