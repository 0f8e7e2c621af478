"""The container's own per-model series (its GET /metrics), read by the harness.

`mme-local`'s /metrics appends them to the SageMaker-side series it measures itself, so one scrape shows
both sides; the demo prints a short per-model table from them.
"""

from __future__ import annotations

import requests

from sklearn_mme.harness.metrics import parse_exposition, sample_sum

SCRAPE_TIMEOUT_S = 2.0


def scrape(base_url: str, session: requests.Session | None = None) -> str:
    """The container's Prometheus text, or "" when it does not answer (the harness's series still show)."""
    try:
        resp = (session or requests).get(f"{base_url.rstrip('/')}/metrics", timeout=SCRAPE_TIMEOUT_S)
    except requests.RequestException:
        return ""
    return resp.text if resp.status_code == 200 else ""


def per_model_rows(text: str) -> list[tuple[str, int, int, float | None, int, int]]:
    """(model, invokes, errors (4xx+5xx), mean latency ms, loads, bytes held) per model, busiest first."""
    samples = parse_exposition(text)
    models = {dict(labels)["model"] for (name, labels) in samples if "model" in dict(labels)}
    rows = []
    for model in models:
        by_status = {dict(labels)["status"]: v for (name, labels), v in samples.items()
                     if name == "mme_container_invocations_total" and dict(labels)["model"] == model}
        invokes = int(sum(by_status.values()))
        errors = int(sum(v for status, v in by_status.items() if status >= "400"))
        count = sample_sum(samples, "mme_container_invocation_latency_seconds_count", model=model)
        total = sample_sum(samples, "mme_container_invocation_latency_seconds_sum", model=model)
        loads = int(sample_sum(samples, "mme_container_model_loading_seconds_count", model=model))
        held = int(sample_sum(samples, "mme_container_model_bytes", model=model))
        rows.append((model, invokes, errors, 1000 * total / count if count else None, loads, held))
    return sorted(rows, key=lambda r: (-r[1], r[0]))


def table(text: str, limit: int = 10) -> list[str]:
    """A short per-model table, as the demo prints it."""
    rows = per_model_rows(text)
    out = [f"  {'model':<28} {'invokes':>7} {'errors':>6} {'mean ms':>8} {'loads':>5} {'MB held':>8}"]
    for model, invokes, errors, mean_ms, loads, held in rows[:limit]:
        mean = f"{mean_ms:.2f}" if mean_ms is not None else "-"
        out.append(f"  {model[:28]:<28} {invokes:>7} {errors:>6} {mean:>8} {loads:>5} {held / 1e6:>8.2f}")
    if len(rows) > limit:
        out.append(f"  ... {len(rows) - limit} more")
    return out
