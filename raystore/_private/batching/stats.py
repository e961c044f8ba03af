"""Observability of a batch queue: the observer interface and `BatchStats`, its plain-Python record."""

from __future__ import annotations

from collections import Counter, deque
from typing import Any, Protocol


class BatchObserver(Protocol):
    """Receives the events of a dispatcher. All times are in seconds."""

    def request_admitted(self, rows: int) -> None: ...

    def request_rejected(self, rows: int, stage: str) -> None:
        """`stage` is "admission" (turned away on arrival) or "queue" (dropped while waiting)."""

    def request_cancelled(self) -> None: ...

    def request_started(self, queue_wait_s: float) -> None:
        """The request's first rows were dispatched after waiting `queue_wait_s`."""

    def batch_finished(self, rows: int, requests: int, execution_s: float, failed: bool) -> None: ...


class Summary:
    """Count, mean, min and max of a series of values, and percentiles over the last `window`."""

    def __init__(self, window: int = 2048):
        self.count = 0
        self.total = 0.0
        self.min = float("inf")
        self.max = 0.0
        self._recent: deque[float] = deque(maxlen=window)

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value < self.min:
            self.min = value
        if value > self.max:
            self.max = value
        self._recent.append(value)

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0

    def percentile(self, q: float) -> float:
        """The `q`-th percentile (0-100) of the recent values (nearest rank), 0.0 when empty."""
        if not self._recent:
            return 0.0
        ordered = sorted(self._recent)
        rank = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
        return ordered[rank]

    def as_dict(self) -> dict[str, float]:
        return {
            "count": self.count,
            "mean": self.mean,
            "min": self.min if self.count else 0.0,
            "max": self.max,
            "p50": self.percentile(50),
            "p99": self.percentile(99),
        }


class BatchStats:
    """What one batched method on one object has done so far; readable with or without Ray.

    `batch_sizes` maps rows per batch to how many batches had that size; `queue_wait` (per
    request) and `execution` (per batch) summarise times in seconds. `rejected` counts requests
    turned away on arrival, `expired` those dropped from the queue because they could no longer
    finish in time; `shed` is both.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.rows = 0
        self.batches = 0
        self.batched_rows = 0
        self.failed_batches = 0
        self.rejected = 0
        self.expired = 0
        self.cancelled = 0
        self.batch_sizes: Counter[int] = Counter()
        self.queue_wait = Summary()
        self.execution = Summary()

    @property
    def shed(self) -> int:
        return self.rejected + self.expired

    @property
    def mean_batch_size(self) -> float:
        return self.batched_rows / self.batches if self.batches else 0.0

    # ---- BatchObserver -------------------------------------------------------------------------

    def request_admitted(self, rows: int) -> None:
        self.requests += 1
        self.rows += rows

    def request_rejected(self, rows: int, stage: str) -> None:
        if stage == "admission":
            self.rejected += 1
        else:
            self.expired += 1

    def request_cancelled(self) -> None:
        self.cancelled += 1

    def request_started(self, queue_wait_s: float) -> None:
        self.queue_wait.add(queue_wait_s)

    def batch_finished(self, rows: int, requests: int, execution_s: float, failed: bool) -> None:
        self.batches += 1
        self.batched_rows += rows
        self.batch_sizes[rows] += 1
        self.execution.add(execution_s)
        if failed:
            self.failed_batches += 1

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly snapshot."""
        return {
            "requests": self.requests,
            "rows": self.rows,
            "batches": self.batches,
            "mean_batch_size": self.mean_batch_size,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "failed_batches": self.failed_batches,
            "rejected": self.rejected,
            "expired": self.expired,
            "cancelled": self.cancelled,
            "queue_wait_s": self.queue_wait.as_dict(),
            "execution_s": self.execution.as_dict(),
        }

    def __repr__(self) -> str:
        return (
            f"BatchStats(requests={self.requests}, rows={self.rows}, batches={self.batches}, "
            f"mean_batch_size={self.mean_batch_size:.1f}, shed={self.shed}, failed_batches={self.failed_batches})"
        )
