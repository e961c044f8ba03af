"""Why a level measured what it did: a raystore service's own batch statistics (`/ui/service.json`,
its console's), read before and after each level and subtracted, per runner method. Any other
target simply has none.

Each read answers with one replica's numbers for each method (the ingress replica that took the
read, for an embedded runner; the runner replica Serve routed the question to, for a served
one), named by the replica's `replica` id. So the statistics are read until no new replica
turns up, and a level's numbers are the sum, over the replicas seen both before and after it, of
what each did.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import urlsplit, urlunsplit

TIMEOUT_S = 5.0
QUIET_READS = 8  # reads in a row that found no new replica: the snapshot has them all
MAX_READS = 40


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


def replica_snapshot(url: str) -> dict[str, dict[str, dict[str, Any]]] | None:
    """Per `runner.method`, per replica id: that replica's statistics (None when the service does
    not answer). Read until `QUIET_READS` reads in a row found no replica not seen before (Serve's
    router does not take turns: a replica can miss several reads in a row), `MAX_READS` at most."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    quiet = 0
    for _ in range(MAX_READS):
        document = snapshot(url)
        if document is None:
            return out or None
        new = False
        for key, stats, source in _methods(document):
            if stats is not None:
                replica = str(stats.get("replica", source))
                new = new or replica not in out.get(key, {})
                out.setdefault(key, {})[replica] = {**stats, "from": source}
        quiet = 0 if new else quiet + 1
        if quiet >= QUIET_READS:
            break
    return out


def difference(
    before: dict[str, dict[str, dict[str, Any]]] | None, after: dict[str, dict[str, dict[str, Any]]] | None
) -> dict[str, dict[str, Any]]:
    """Per `runner.method`: what its batch queues did between two `replica_snapshot`s, summed over
    the replicas in both (a replica missing from either, or whose counters went down, as after a
    restart, is left out)."""
    if before is None or after is None:
        return {}
    out = {}
    for key, replicas in after.items():
        earlier = before.get(key) or {}
        moved = []
        for replica, stats in replicas.items():
            old = earlier.get(replica)
            if old is None or any(stats[c] < old[c] for c in ("requests", "batches")):
                continue
            moved.append((stats, old))
        if not moved:
            continue
        batches = sum(stats["batches"] - old["batches"] for stats, old in moved)
        rows = sum(_batched_rows(stats) - _batched_rows(old) for stats, old in moved)
        busiest_replica = max(moved, key=lambda pair: pair[0]["requests"] - pair[1]["requests"])[0]
        out[key] = {
            "requests": sum(stats["requests"] - old["requests"] for stats, old in moved),
            "batches": batches,
            "mean_batch_size": rows / batches if batches else 0.0,
            # over each replica's recent requests: the worst queue wait, the busiest one's execution
            "queue_wait_p99_ms": max(stats["queue_wait_s"]["p99"] for stats, _ in moved) * 1000,
            "execution_p50_ms": busiest_replica["execution_s"]["p50"] * 1000,
            "rejected": sum(stats["rejected"] - old["rejected"] for stats, old in moved),
            "expired": sum(stats["expired"] - old["expired"] for stats, old in moved),
            "replicas": len(moved),
            "from": moved[0][0]["from"] if len(moved) == 1 else f"{len(moved)} replicas",
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
