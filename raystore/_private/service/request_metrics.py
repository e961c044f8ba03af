"""Request metrics of a service, as Ray metrics (Prometheus format on the node's metrics port, where
Ray prefixes every name with `ray_`): `raystore_requests_total{service,api,code}` counts every
request, and `raystore_request_duration_seconds{service,api}` keeps a uniform sample of at most
`LATENCY_SAMPLES_PER_S` requests per API and second (so its `_count` is the sample's size, not the
number of requests). Buffered on the replica's event loop and handed to Ray once a second."""

from __future__ import annotations

from typing import Any

from raystore._private.metric_buffer import DURATION_S_BOUNDARIES, MetricBuffer

LATENCY_SAMPLES_PER_S = 200


class RequestMetrics:
    def __init__(self, service: str):
        from ray.util import metrics

        self.service = service
        self.requests = metrics.Counter(
            "raystore_requests_total",
            description="HTTP requests to raystore service APIs, by status code (every request).",
            tag_keys=("service", "api", "code"),
        )
        self.latency = metrics.Histogram(
            "raystore_request_duration_seconds",
            description="Time from request to response, in seconds (a sample of at most 200 requests per API and second).",
            boundaries=DURATION_S_BOUNDARIES,
            tag_keys=("service", "api"),
        )
        # The latency histogram keeps at most this many requests per API and second, a uniform
        # sample: enough for its quantiles, and a busy replica does not spend a few percent of its
        # time handing every value to Ray. raystore_requests_total counts every request.
        self.buffer = MetricBuffer(max_observations=LATENCY_SAMPLES_PER_S)
        self._tags: dict[tuple[str, int], tuple[tuple, tuple]] = {}  # (api, status) -> (count tags, latency tags)

    def record(self, api: str, status: int, duration_s: float) -> None:
        """Count one request (on the replica's event loop)."""
        tags = self._tags.get((api, status))
        if tags is None:
            latency_tags = (("service", self.service), ("api", api))
            tags = self._tags[(api, status)] = ((*latency_tags, ("code", str(status))), latency_tags)
        self.buffer.inc(self.requests, tags[0])
        self.buffer.observe(self.latency, tags[1], duration_s)


def request_metrics(service: str) -> Any:
    """Metrics for a service's ingress replica, or None where Ray metrics cannot be made."""
    try:
        return RequestMetrics(service)
    except Exception:  # metrics are a convenience: never let them stop the service
        return None
