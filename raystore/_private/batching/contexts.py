"""Whose requests a batch serves: each caller's request context, captured when it queues, and made
available to the batch function (`raystore.batch_request_contexts()`, and Serve's own
`_get_serve_batch_request_context()`, as `@serve.batch` makes it).

A batch runs in a context of its own, not in the context of the caller that happened to trigger
it: nothing in it (logs, traces, Serve's request id) is attributed to one of its callers.

Ray is not imported here: a caller's Serve context is read only when Serve's context module is
already loaded (in a Serve replica it always is).
"""

from __future__ import annotations

import contextvars
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_SERVE_CONTEXT = "ray.serve.context"

_batch_contexts: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
    "raystore_batch_request_contexts", default=()
)


def batch_request_contexts() -> list[Any]:
    """Inside a batched function: the request context of each request in the batch, in batch
    order (in a Ray Serve replica, Serve's `_RequestContext`: request id, route, app name,
    multiplexed model id; elsewhere, None for each). Outside a batch: an empty list."""
    return list(_batch_contexts.get())


def caller_context() -> Any:
    """The calling request's context, captured as it queues (None outside Serve)."""
    serve_context = sys.modules.get(_SERVE_CONTEXT)
    if serve_context is None:
        return None
    return serve_context._serve_request_context.get()


@contextmanager
def serving(contexts: list[Any]) -> Iterator[None]:
    """Run a batch with its requests' contexts: ours, and Serve's batch context when in Serve."""
    token = _batch_contexts.set(tuple(contexts))
    serve_context = sys.modules.get(_SERVE_CONTEXT)
    serve_token = None
    if serve_context is not None:
        serve_token = serve_context._serve_batch_request_context.set([c for c in contexts if c is not None])
    try:
        yield
    finally:
        _batch_contexts.reset(token)
        if serve_token is not None:
            serve_context._serve_batch_request_context.reset(serve_token)


def neutral() -> contextvars.Context:
    """A context in which no caller's request is current: where batches start."""
    return contextvars.Context()
