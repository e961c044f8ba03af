"""Adaptive batching along any batch dimension: `raystore.batch`, an extension of `@serve.batch`.

- `batch`: the decorator (see its docstring for the whole contract);
- `containers`: concatenating payloads along a batch dim and splitting results back;
- `policy`: when to dispatch, how many rows, whom to reject (pure, clock-free);
- `dispatcher`: the asyncio queue that applies the policy;
- `streaming`: batched async generators, step by step, and continuous batching (`BatchUpdate`);
- `contexts`: the callers' request contexts, as a batch sees them (`batch_request_contexts()`);
- `stats` / `serve_metrics`: what the queue did, as a plain object and, inside Ray Serve, as Ray metrics.

Its settings are `BatchConfig` (`raystore._private.batch_config`), the errors it raises are in
`raystore.exceptions`. Nothing here imports Ray, torch or pandas at import time.
"""

from raystore._private.batch_config import BatchConfig
from raystore._private.batching.api import (
    BatchedFunction,
    BatchedMethod,
    StreamingBatchedFunction,
    StreamingBatchedMethod,
    batch,
    is_async_generator,
)
from raystore._private.batching.containers import concat, slice_rows, split
from raystore._private.batching.contexts import batch_request_contexts
from raystore._private.batching.stats import BatchStats
from raystore._private.batching.streaming import BatchUpdate
from raystore.exceptions import ServiceUnavailable

__all__ = [
    "BatchConfig",
    "BatchStats",
    "BatchUpdate",
    "BatchedFunction",
    "BatchedMethod",
    "ServiceUnavailable",
    "StreamingBatchedFunction",
    "StreamingBatchedMethod",
    "batch",
    "batch_request_contexts",
    "concat",
    "is_async_generator",
    "slice_rows",
    "split",
]
