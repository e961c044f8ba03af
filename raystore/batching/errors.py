"""Errors of the batching layer."""

from __future__ import annotations

from raystore.exceptions import RaystoreError


class ServiceUnavailable(RaystoreError):
    """The batch queue cannot serve this request within `max_latency_ms`; try again later.

    Raised instead of queueing without bound when the model is overloaded. `retry_after_s` is the
    predicted time until the queue ahead has drained, for an HTTP layer to answer
    `503 Service Unavailable` with a `Retry-After` header.
    """

    def __init__(self, message: str, *, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    def __reduce__(self):
        # Keep `retry_after_s` when the error crosses a process boundary (Ray pickles exceptions).
        return (_rebuild_service_unavailable, (str(self), self.retry_after_s))


def _rebuild_service_unavailable(message: str, retry_after_s: float) -> ServiceUnavailable:
    return ServiceUnavailable(message, retry_after_s=retry_after_s)
