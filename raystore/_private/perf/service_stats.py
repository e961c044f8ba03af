"""Why a level measured what it did: a raystore service's own batch statistics (`/ui/service.json`,
its console's), read before and after each level and subtracted, per runner method. Any other
target simply has none."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TIMEOUT_S = 5.0


def find_status_url(target: str) -> str | None:
    """The service's `/ui/service.json` beside the API `target` (under its route prefix, if it
    has one), or None when the target is not a raystore service with its console."""
    parts = urlsplit(target)
    segments = [s for s in parts.path.split("/") if s]
    for keep in range(len(segments) - 1, -1, -1):
        path = "/" + "/".join([*segments[:keep], "ui", "service.json"])
        url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
        if snapshot(url) is not None:
            return url
    return None


def snapshot(url: str) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            document = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return document if isinstance(document, dict) and "runners" in document else None


def difference(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Per `runner.method`: what its batch queue did between the two snapshots."""
    if before is None or after is None:
        return {}
    earlier = {key: stats for key, stats, _ in _methods(before)}
    out = {}
    for key, stats, source in _methods(after):
        if stats is None:
            continue
        old = earlier.get(key) or {}
        if any(stats[counter] < old.get(counter, 0) for counter in ("requests", "batches")):
            continue  # another replica answered, or this one restarted: no difference to tell
        rows = _batched_rows(stats) - _batched_rows(old)
        batches = stats["batches"] - old.get("batches", 0)
        out[key] = {
            "requests": stats["requests"] - old.get("requests", 0),
            "batches": batches,
            "mean_batch_size": rows / batches if batches else 0.0,
            "queue_wait_p99_ms": stats["queue_wait_s"]["p99"] * 1000,  # over the replica's recent requests
            "execution_p50_ms": stats["execution_s"]["p50"] * 1000,
            "rejected": stats["rejected"] - old.get("rejected", 0),
            "expired": stats["expired"] - old.get("expired", 0),
            "from": source,
        }
    return out


def busiest(batching: dict[str, dict[str, Any]]) -> tuple[str, dict[str, Any]] | None:
    """The method that took the most requests in the level, the one a summary shows."""
    if not batching:
        return None
    return max(batching.items(), key=lambda item: item[1]["requests"])


def _methods(document: dict[str, Any]) -> list[tuple[str, dict[str, Any] | None, str | None]]:
    return [
        (f"{runner['name']}.{method['name']}", method.get("stats"), method.get("stats_from"))
        for runner in document.get("runners", [])
        for method in runner.get("methods", [])
    ]


def _batched_rows(stats: dict[str, Any]) -> int:
    return sum(int(size) * count for size, count in (stats.get("batch_sizes") or {}).items())
