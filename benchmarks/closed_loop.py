"""Closed-loop load from this process, shared by the benchmarks that call models through handles
or in process: callers that each await their call and send again at once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any


def percentile_ms(latencies: list[float], q: float) -> float:
    """The `q` quantile of sorted latencies in seconds, in milliseconds."""
    return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]


async def closed_loop(
    call: Callable[[Any], Awaitable[Any]], x: Any, callers: int, duration_s: float, warmup_s: float = 2.0
) -> tuple[float, float, float]:
    """(calls/s, p50 ms, p99 ms) of `callers` callers, each awaiting `call(x)` back to back;
    the first `warmup_s` seconds are not measured."""
    latencies: list[float] = []
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s

    async def caller() -> None:
        while (now := time.perf_counter()) < stop_at:
            await call(x)
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)

    await asyncio.gather(*[caller() for _ in range(callers)])
    latencies.sort()
    return len(latencies) / duration_s, percentile_ms(latencies, 0.50), percentile_ms(latencies, 0.99)
