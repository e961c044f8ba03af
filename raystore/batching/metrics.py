"""Ray metrics for batch queues running inside a Ray Serve replica.

Ray is never imported here at module level: `serve_replica_metrics` only looks for a replica when
Ray is already loaded, so the batching package keeps working, and stays light, without Ray.
"""

from __future__ import annotations

import sys
from typing import Any

from raystore.batching.stats import BatchObserver

_TAG_KEYS = ("deployment", "application", "method")
_ROW_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
_MS_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

_metrics: dict[str, Any] = {}  # one metric object per name and process, created on first use


def serve_replica_metrics(method: str) -> BatchObserver | None:
    """A Ray metrics observer when running inside a Ray Serve replica, otherwise None."""
    if "ray" not in sys.modules:
        return None
    try:
        from ray import serve

        context = serve.get_replica_context()
    except Exception:  # not in a replica (RayServeException), or Serve not importable
        return None
    try:
        return RayBatchMetrics(deployment=context.deployment, application=context.app_name, method=method)
    except Exception:  # metrics are a convenience: never let them stop the model from serving
        return None


def _histogram(name: str, description: str, boundaries: list[float]) -> Any:
    if name not in _metrics:
        from ray.util import metrics

        _metrics[name] = metrics.Histogram(name, description, boundaries=boundaries, tag_keys=_TAG_KEYS)
    return _metrics[name]


def _counter(name: str, description: str, extra_tag_keys: tuple[str, ...] = ()) -> Any:
    if name not in _metrics:
        from ray.util import metrics

        _metrics[name] = metrics.Counter(name, description, tag_keys=_TAG_KEYS + extra_tag_keys)
    return _metrics[name]


class RayBatchMetrics:
    """Records batch queue events as Ray histograms and counters tagged with the deployment name."""

    def __init__(self, *, deployment: str, application: str, method: str):
        self._tags = {"deployment": deployment, "application": application, "method": method}
        self._batch_size = _histogram("raystore_batch_size", "Rows per executed batch.", _ROW_BOUNDARIES)
        self._queue_wait = _histogram(
            "raystore_batch_queue_wait_ms", "Time a request waited before its batch started.", _MS_BOUNDARIES
        )
        self._execution = _histogram("raystore_batch_execution_ms", "Execution time of one batch.", _MS_BOUNDARIES)
        self._requests = _counter("raystore_batch_requests_total", "Requests admitted to the batch queue.")
        self._rows = _counter("raystore_batch_rows_total", "Rows admitted to the batch queue.")
        self._rejected = _counter(
            "raystore_batch_rejected_total", "Requests shed with ServiceUnavailable, by stage.", ("stage",)
        )
        self._failed = _counter("raystore_batch_failed_total", "Batches whose function raised.")

    def request_admitted(self, rows: int) -> None:
        self._requests.inc(1, tags=self._tags)
        if rows:
            self._rows.inc(rows, tags=self._tags)

    def request_rejected(self, rows: int, stage: str) -> None:
        self._rejected.inc(1, tags={**self._tags, "stage": stage})

    def request_cancelled(self) -> None:
        pass

    def request_started(self, queue_wait_s: float) -> None:
        self._queue_wait.observe(queue_wait_s * 1000.0, tags=self._tags)

    def batch_finished(self, rows: int, requests: int, execution_s: float, failed: bool) -> None:
        self._batch_size.observe(rows, tags=self._tags)
        self._execution.observe(execution_s * 1000.0, tags=self._tags)
        if failed:
            self._failed.inc(1, tags=self._tags)
