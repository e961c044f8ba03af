"""Ray metric updates buffered on the event loop (`MetricBuffer`), and the histogram boundaries
that raystore's batch and request metrics share. Used by the batch queues and the service ingress;
Ray itself is imported by whoever makes the metric objects, never here."""

from __future__ import annotations

import asyncio
import logging
import random
from typing import Any

from raystore.exceptions import InvalidArgument

logger = logging.getLogger("raystore.metrics")

ROW_BOUNDARIES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
# Durations in seconds, Prometheus' base unit: 1 ms to 10 s.
DURATION_S_BOUNDARIES = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10]


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
            raise InvalidArgument(f"max_observations must be at least 1 (or None for all), got {max_observations}")
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
