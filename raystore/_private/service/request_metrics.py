"""Request metrics of a service, as Ray metrics (Prometheus format on the node's metrics port):
`raystore_requests_total{service,api,status}` (every request) and `raystore_request_latency_ms{service,api}`
(a uniform sample of at most `LATENCY_SAMPLES_PER_S` requests per API and second), buffered on the
replica's event loop and handed to Ray once a second."""

from __future__ import annotations

from typing import Any

from raystore._private.metric_buffer import LATENCY_MS_BOUNDARIES, MetricBuffer

LATENCY_SAMPLES_PER_S = 200


class RequestMetrics:
    def __init__(self, service: str):
        from ray.util import metrics

        self.service = service
        self.requests = metrics.Counter(
            "raystore_requests_total",
            description="HTTP requests to raystore service APIs, by status",
            tag_keys=("service", "api", "status"),
        )
        self.latency = metrics.Histogram(
            "raystore_request_latency_ms",
            description="Time from request to response, in ms",
            boundaries=LATENCY_MS_BOUNDARIES,
            tag_keys=("service", "api"),
        )
        # The latency histogram keeps at most this many requests per API and second, a uniform
        # sample: enough for its quantiles, and a busy replica does not spend a few percent of its
        # time handing every value to Ray. raystore_requests_total counts every request.
        self.buffer = MetricBuffer(max_observations=LATENCY_SAMPLES_PER_S)
        self._tags: dict[tuple[str, int], tuple[tuple, tuple]] = {}  # (api, status) -> (count tags, latency tags)

    def record(self, api: str, status: int, latency_ms: float) -> None:
        """Count one request (on the replica's event loop)."""
        tags = self._tags.get((api, status))
        if tags is None:
            latency_tags = (("service", self.service), ("api", api))
            tags = self._tags[(api, status)] = ((*latency_tags, ("status", str(status))), latency_tags)
        self.buffer.inc(self.requests, tags[0])
        self.buffer.observe(self.latency, tags[1], latency_ms)


def request_metrics(service: str) -> Any:
    """Metrics for a service's ingress replica, or None where Ray metrics cannot be made."""
    try:
        return RequestMetrics(service)
    except Exception:  # metrics are a convenience: never let them stop the service
        return None
