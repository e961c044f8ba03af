"""The load generator: `--concurrency` connections, each sending its next request as soon as the
last is answered (closed loop), in a process of its own so that measuring does not compete with
the caller for the interpreter. aiohttp keeps the connections open; completions are cut into
windows by the time they end, and windows go on until the last three agree (`windows.steady`)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Any

from raystore._private.perf.windows import Window, steady

WARMUP_S = 1.0


def measure_level(
    url: str,
    bodies: list[tuple[bytes, str]],
    concurrency: int,
    window_s: float,
    max_windows: int,
    tolerance: float,
    timeout_s: float = 60.0,
) -> tuple[list[dict[str, Any]], bool]:
    """Run one load level; returns its windows (as dicts) and whether the last ones agreed."""
    windows, is_steady = asyncio.run(_measure(url, bodies, concurrency, window_s, max_windows, tolerance, timeout_s))
    return [asdict(w) for w in windows], is_steady


async def _measure(
    url: str,
    bodies: list[tuple[bytes, str]],
    concurrency: int,
    window_s: float,
    max_windows: int,
    tolerance: float,
    timeout_s: float,
) -> tuple[list[Window], bool]:
    import aiohttp

    done: list[tuple[float, int]] = []  # (latency ms, status; -1 for a failed connection)
    running = True
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout_s)) as session:

        async def caller(first: int) -> None:
            n = first
            while running:
                body, content_type = bodies[n % len(bodies)]
                n += concurrency
                start = time.perf_counter()
                try:
                    async with session.post(url, data=body, headers={"Content-Type": content_type}) as response:
                        await response.read()
                        status = response.status
                except (TimeoutError, aiohttp.ClientError, OSError):
                    status = -1
                done.append(((time.perf_counter() - start) * 1000, status))

        callers = [asyncio.create_task(caller(i)) for i in range(concurrency)]
        try:
            await asyncio.sleep(WARMUP_S)
            done.clear()
            windows: list[Window] = []
            is_steady = False
            while len(windows) < max_windows and not is_steady:
                started, cpu = time.perf_counter(), time.process_time()
                await asyncio.sleep(window_s)
                ended, cpu = time.perf_counter(), time.process_time() - cpu
                finished, done[:] = list(done), []
                window = Window(duration_s=ended - started, cpu_s=cpu)
                for latency, status in finished:
                    if 200 <= status < 300:
                        window.latencies_ms.append(latency)
                    elif status == 503:
                        window.overloaded += 1
                    else:
                        window.errors += 1
                windows.append(window)
                is_steady = steady(windows, tolerance)
        finally:
            running = False
            for task in callers:
                task.cancel()
            await asyncio.gather(*callers, return_exceptions=True)
    return windows, is_steady
