"""Every error raystore raises, grouped by area.

Each says what was wrong and what to do, is also the builtin exception that fits it (so that
`except ValueError` keeps working), and carries the HTTP status it stands for (`http_status`;
`http_headers()` for extra response headers). A service maps errors to responses in one place
(`raystore._private.service.app.exception_response`): the client's errors (`BadInput` and its
kin) and `ServiceUnavailable` answer with their own status; any other error an API lets through is
the API's failure, a 500 (or the 5xx status a raystore error carries).
"""

from __future__ import annotations


class RaystoreError(Exception):
    """Base class of all raystore errors; answered 500 unless a subclass says otherwise."""

    http_status = 500

    def http_headers(self) -> dict[str, str]:
        return {}


# ---- names, arguments and settings ---------------------------------------------------------------


class InvalidTag(RaystoreError, ValueError):
    """A tag, name or version does not follow the naming rules."""

    http_status = 400


class InvalidArgument(RaystoreError, ValueError):
    """An argument is malformed: labels, metadata, signatures, runner or batch settings, ..."""

    http_status = 400


class ConfigError(RaystoreError, ValueError):
    """The configuration file or an environment setting is invalid (the server's fault: 500)."""


class MissingDependency(RaystoreError, ImportError):
    """An optional package needed for this operation is not installed."""


# ---- the store --------------------------------------------------------------------------------------


class NotFound(RaystoreError, LookupError):
    """The requested model or version does not exist in the store."""

    http_status = 404


class AmbiguousTag(RaystoreError, LookupError):
    """A version prefix matches more than one version."""

    http_status = 400


class FrameworkMismatch(RaystoreError, TypeError):
    """A model was saved by one framework module and requested through another."""

    http_status = 400


class StoreError(RaystoreError):
    """The store is unusable: unreadable files, a corrupt version, a failed write, an unreachable bucket."""


# ---- batching and runners ------------------------------------------------------------------------


class ServiceUnavailable(RaystoreError):
    """The batch queue cannot serve this request within `max_latency_ms`; try again later.

    Raised instead of queueing without bound when the model is overloaded. `retry_after_s` is the
    predicted time until the queue ahead has drained; a service answers `503` with `Retry-After`.
    """

    http_status = 503

    def __init__(self, message: str, *, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def retry_after_header(self) -> str:
        """Whole seconds, at least 1, as `Retry-After` wants them."""
        return str(max(1, round(self.retry_after_s)))

    def http_headers(self) -> dict[str, str]:
        return {"Retry-After": self.retry_after_header}

    def __reduce__(self):
        # Keep `retry_after_s` (and the subclass) when the error crosses a process boundary (Ray
        # pickles exceptions).
        return (_rebuild_service_unavailable, (type(self), str(self), self.retry_after_s))


def _rebuild_service_unavailable(
    cls: type[ServiceUnavailable], message: str, retry_after_s: float
) -> ServiceUnavailable:
    return cls(message, retry_after_s=retry_after_s)


class QueueFull(ServiceUnavailable):
    """A batch queue turned the request away: the work ahead of it would not finish within
    `max_latency_ms`. A service's API sheds its next requests before reading their bodies until
    `retry_after_s` has passed (at most 1 s)."""


class RunnerNotReady(RaystoreError, RuntimeError):
    """A runner was called before `init_local()` or before being served."""

    http_status = 503


class NoNvidiaGpu(RaystoreError, RuntimeError):
    """NVML is missing or reports no device; the message says why."""


# ---- HTTP requests to a service ------------------------------------------------------------------


class BadInput(RaystoreError, ValueError):
    """The request body does not parse or does not match the API's input descriptor."""

    http_status = 400


class PayloadTooLarge(BadInput):
    """The request body is larger than the service accepts."""

    http_status = 413


class UnsupportedMediaType(BadInput):
    """The request's Content-Type is not one the API's input descriptor reads."""

    http_status = 415


class RequestTimeout(BadInput):
    """The request body did not arrive in time (a slow or stalled client); the connection closes."""

    http_status = 408

    def http_headers(self) -> dict[str, str]:
        return {"Connection": "close"}  # the rest of the body is never read: the connection is unusable


class InvalidOutput(RaystoreError, TypeError):
    """An API returned a value its output descriptor cannot render (a bug in the API: 500)."""


# ---- clusters -----------------------------------------------------------------------------------


class ClusterError(RaystoreError):
    """A Ray cluster refused a request or could not be reached; the message says why and what to do."""

    http_status = 502
