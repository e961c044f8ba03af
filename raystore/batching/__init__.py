"""Adaptive batching along any batch dimension: `raystore.batch`, an extension of `@serve.batch`.

- `batch`: the decorator (see its docstring for the whole contract);
- `containers`: concatenating payloads along a batch dim and splitting results back;
- `policy`: when to dispatch, how many rows, whom to reject (pure, clock-free);
- `dispatcher`: the asyncio queue that applies the policy;
- `stats` / `metrics`: what the queue did, as a plain object and, inside Ray Serve, as Ray metrics.

Nothing here imports Ray, torch or pandas at import time.
"""

from raystore.batching.api import BatchedFunction, BatchedMethod, batch
from raystore.batching.config import BatchConfig
from raystore.batching.containers import concat, slice_rows, split
from raystore.batching.errors import ServiceUnavailable
from raystore.batching.stats import BatchStats

__all__ = [
    "BatchConfig",
    "BatchStats",
    "BatchedFunction",
    "BatchedMethod",
    "ServiceUnavailable",
    "batch",
    "concat",
    "slice_rows",
    "split",
]
