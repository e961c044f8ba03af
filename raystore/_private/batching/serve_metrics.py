"""Ray metrics for batch queues running inside a Ray Serve replica.

Ray is never imported here at module level: `serve_replica_metrics` only looks for a replica when
Ray is already loaded, so the batching package keeps working, and stays light, without Ray.
"""

from __future__ import annotations

from typing import Any

from raystore._private.batching.stats import BatchObserver
from raystore._private.metric_buffer import DURATION_S_BOUNDARIES, ROW_BOUNDARIES, MetricBuffer
from raystore._private.replica import serve_replica_context

_TAG_KEYS = ("deployment", "application", "method")

_metrics: dict[str, Any] = {}  # one metric object per name and process, created on first use


def serve_replica_metrics(method: str) -> BatchObserver | None:
    """A Ray metrics observer when running inside a Ray Serve replica, otherwise None."""
    context = serve_replica_context()
    if context is None:
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


# Each batch histogram keeps a uniform sample of at most this many batches per second. A small
# model in batches of a few rows runs a thousand batches a second or more; handing Ray every one
# of them (three observations a batch, 2-4 us each) stalls the replica's event loop for several
# milliseconds once a second, which shows in the requests' p99. raystore_batches_total counts all.
BATCH_SAMPLES_PER_S = 200


class RayBatchMetrics:
    """Records batch queue events as Ray histograms and counters tagged with the deployment name."""

    def __init__(self, *, deployment: str, application: str, method: str):
        self._tags = (("deployment", deployment), ("application", application), ("method", method))
        self._buffer = MetricBuffer(max_observations=BATCH_SAMPLES_PER_S)
        self._longest_wait_s = 0.0  # of the requests started since the last batch finished
        self._admitted_requests = self._admitted_rows = 0  # since the last batch finished
        self._batch_size = _histogram("raystore_batch_size", "Rows per executed batch.", ROW_BOUNDARIES)
        self._queue_wait = _histogram(
            "raystore_batch_queue_wait_seconds",
            "The longest time a request of each batch waited for it to start, in seconds.",
            DURATION_S_BOUNDARIES,
        )
        self._execution = _histogram(
            "raystore_batch_execution_seconds", "Execution time of one batch, in seconds.", DURATION_S_BOUNDARIES
        )
        self._requests = _counter("raystore_batch_requests_total", "Requests admitted to the batch queue.")
        self._rows = _counter("raystore_batch_rows_total", "Rows admitted to the batch queue.")
        self._rejected = _counter(
            "raystore_batch_rejected_total", "Requests shed with ServiceUnavailable, by stage.", ("stage",)
        )
        self._failed = _counter("raystore_batch_failed_total", "Batches whose function raised.")
        self._batches = _counter("raystore_batches_total", "Batches executed, failed ones included.")

    def request_admitted(self, rows: int) -> None:
        # Counted here and handed to the buffer when the request's fate shows (a batch finishes, a
        # request is shed or cancelled): this runs for every request.
        self._admitted_requests += 1
        self._admitted_rows += rows

    def _hand_over_admissions(self) -> None:
        if self._admitted_requests:
            self._buffer.inc(self._requests, self._tags, self._admitted_requests)
            if self._admitted_rows:
                self._buffer.inc(self._rows, self._tags, self._admitted_rows)
            self._admitted_requests = self._admitted_rows = 0

    def request_rejected(self, rows: int, stage: str) -> None:
        self._hand_over_admissions()
        self._buffer.inc(self._rejected, (*self._tags, ("stage", stage)))

    def request_cancelled(self) -> None:
        self._hand_over_admissions()

    def request_started(self, queue_wait_s: float) -> None:
        # One observation per batch, not per request: the histogram is for spotting queueing, and
        # its cost on a replica serving thousands of small requests a second is not negligible.
        self._longest_wait_s = max(self._longest_wait_s, queue_wait_s)

    def batch_finished(self, rows: int, requests: int, execution_s: float, failed: bool) -> None:
        self._hand_over_admissions()
        self._buffer.observe(self._queue_wait, self._tags, self._longest_wait_s)
        self._longest_wait_s = 0.0
        self._buffer.inc(self._batches, self._tags)
        self._buffer.observe(self._batch_size, self._tags, rows)
        self._buffer.observe(self._execution, self._tags, execution_s)
        if failed:
            self._buffer.inc(self._failed, self._tags)
