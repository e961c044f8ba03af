"""Request metrics of a service, as Ray metrics (Prometheus format on the node's metrics port):
`raystore_requests_total{service,api,status}` and `raystore_request_latency_ms{service,api}`,
buffered on the replica's event loop and handed to Ray once a second."""

from __future__ import annotations

from typing import Any

from raystore.batching.metrics import MetricBuffer

_LATENCY_MS_BOUNDARIES = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000]


class RequestMetrics:
    def __init__(self, service: str):
        from ray.util import metrics

        self.service = service
        self.requests = metrics.Counter(
            "raystore_requests_total", description="HTTP requests to raystore service APIs, by status",
            tag_keys=("service", "api", "status"),
        )
        self.latency = metrics.Histogram(
            "raystore_request_latency_ms", description="Time from request to response, in ms",
            boundaries=_LATENCY_MS_BOUNDARIES, tag_keys=("service", "api"),
        )
        self.buffer = MetricBuffer()

    def record(self, api: str, status: int, latency_ms: float) -> None:
        """Count one request (on the replica's event loop)."""
        tags = (("service", self.service), ("api", api))
        self.buffer.inc(self.requests, (*tags, ("status", str(status))))
        self.buffer.observe(self.latency, tags, latency_ms)


def request_metrics(service: str) -> Any:
    """Metrics for a service's ingress replica, or None where Ray metrics cannot be made."""
    try:
        return RequestMetrics(service)
    except Exception:  # metrics are a convenience: never let them stop the service
        return None
