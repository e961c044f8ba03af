"""Ray metrics for batch queues running inside a Ray Serve replica.

Ray is never imported here at module level: `serve_replica_metrics` only looks for a replica when
Ray is already loaded, so the batching package keeps working, and stays light, without Ray.
"""

from __future__ import annotations

import asyncio
import logging
import random
import sys
from typing import Any

from raystore.batching.stats import BatchObserver

_TAG_KEYS = ("deployment", "application", "method")
_ROW_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
_MS_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]

logger = logging.getLogger("raystore.batching")

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


class MetricBuffer:
    """Ray metric updates kept in dicts on the event loop and handed to Ray once a second, as Serve
    does with its own request metrics. A Ray metric call per request costs a replica serving a
    small model about a tenth of its throughput; a buffered one costs a dict update.

    Counter increments add up exactly. Histogram observations are kept whole up to
    `max_observations` per histogram and tags in each interval, and beyond that as a uniform random
    sample of that size (reservoir sampling): even buffered, one Ray `observe` costs about 2-4 us,
    which is a few percent of a replica answering thousands of requests a second.

    Must be used from one event loop (a replica's, or a batch queue's).
    """

    def __init__(self, interval_s: float = 1.0, max_observations: int | None = None):
        if max_observations is not None and max_observations < 1:
            raise ValueError(f"max_observations must be at least 1 (or None for all), got {max_observations}")
        self.interval_s = interval_s
        self.max_observations = max_observations
        self._increments: dict[tuple[Any, tuple], float] = {}
        self._observations: dict[tuple[Any, tuple], list[float]] = {}
        self._offered: dict[tuple[Any, tuple], int] = {}  # observations offered this interval, kept or not
        self._flusher: Any = None

    def inc(self, counter: Any, tags: tuple[tuple[str, str], ...], value: float = 1) -> None:
        key = (counter, tags)
        self._increments[key] = self._increments.get(key, 0) + value
        self._start()

    def observe(self, histogram: Any, tags: tuple[tuple[str, str], ...], value: float) -> None:
        key = (histogram, tags)
        values = self._observations.get(key)
        if values is None:
            values = self._observations[key] = []
        limit = self.max_observations
        if limit is None or len(values) < limit:
            values.append(value)
            if limit is not None:
                self._offered[key] = len(values)
        else:
            offered = self._offered[key] = self._offered[key] + 1
            slot = random.randrange(offered)
            if slot < limit:  # keeps each of the `offered` values with probability limit / offered
                values[slot] = value
        self._start()

    def flush(self) -> None:
        increments, observations = self._increments, self._observations
        self._increments, self._observations, self._offered = {}, {}, {}
        for (counter, tags), value in increments.items():
            counter.inc(value, tags=dict(tags))
        for (histogram, tags), values in observations.items():
            tag_dict = dict(tags)
            for value in values:
                histogram.observe(value, tags=tag_dict)

    def _start(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_forever())

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.flush()
            except Exception:  # metrics are a convenience: keep serving, try again next time
                logger.exception("could not report metrics to Ray")


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
        self._batch_size = _histogram("raystore_batch_size", "Rows per executed batch.", _ROW_BOUNDARIES)
        self._queue_wait = _histogram(
            "raystore_batch_queue_wait_ms", "The longest time a request of each batch waited for it to start.",
            _MS_BOUNDARIES,
        )
        self._execution = _histogram("raystore_batch_execution_ms", "Execution time of one batch.", _MS_BOUNDARIES)
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
        self._buffer.observe(self._queue_wait, self._tags, self._longest_wait_s * 1000.0)
        self._longest_wait_s = 0.0
        self._buffer.inc(self._batches, self._tags)
        self._buffer.observe(self._batch_size, self._tags, rows)
        self._buffer.observe(self._execution, self._tags, execution_s * 1000.0)
        if failed:
            self._buffer.inc(self._failed, self._tags)
