"""The load generator, in a process of its own so that measuring does not compete with the caller
for the interpreter. Connections are kept open: `http1.Http1Connection` for `http://` targets
(a fraction of a general client's CPU a request), aiohttp for `https://`; uvloop when installed.

- Closed loop (`--concurrency N`): N callers, each sending its next request as soon as the last
  is answered.
- Open loop (`--rate R`): requests sent at R a second whatever the answers, at Poisson arrival
  times (or evenly spaced, `--distribution constant`), on a schedule of absolute times, each on a
  connection of its own from a pool of `MAX_OPEN`; an arrival finding none free is an error.

Completions are cut into windows by the time they end, and windows go on until the last three
agree (`windows.steady`).
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict
from typing import Any

from raystore._private.perf.http1 import Http1Connection
from raystore._private.perf.inputs import Body
from raystore._private.perf.windows import Window, steady

WARMUP_S = 1.0
MAX_OPEN = 1024  # connections an open-loop level may hold at once


def measure_level(
    url: str,
    bodies: list[Body],
    concurrency: int,
    window_s: float,
    max_windows: int,
    tolerance: float,
    timeout_s: float = 60.0,
    rate: float | None = None,
    distribution: str = "poisson",
    seed: int = 0,
) -> tuple[list[dict[str, Any]], bool]:
    """Run one load level, closed loop with `concurrency` callers or, given a `rate`, open loop;
    returns its windows (as dicts) and whether the last ones agreed."""
    load = _Load(url, bodies, concurrency, timeout_s, rate, distribution, seed)
    try:
        import uvloop

        windows, is_steady = uvloop.run(load.measure(window_s, max_windows, tolerance))
    except ImportError:
        windows, is_steady = asyncio.run(load.measure(window_s, max_windows, tolerance))
    return [asdict(w) for w in windows], is_steady


class _Load:
    def __init__(self, url, bodies, concurrency, timeout_s, rate, distribution, seed):
        self.url, self.bodies, self.concurrency, self.timeout_s = url, bodies, concurrency, timeout_s
        self.rate, self.distribution, self.seed = rate, distribution, seed
        self.done: list[tuple[float, int]] = []  # (latency ms, status; -1: no answer)
        self.sent = 0
        self.running = True
        self.in_flight: set[asyncio.Task] = set()
        self.raw = url.startswith("http://")
        self.idle: list[Http1Connection] = []  # open-loop connections free for the next arrival
        self.connections: list[Http1Connection] = []
        self.request_bytes: dict[int, bytes] = {}  # each body's request, built once for all

    async def measure(self, window_s: float, max_windows: int, tolerance: float) -> tuple[list[Window], bool]:
        import aiohttp

        limit = self.concurrency if self.rate is None else MAX_OPEN
        connector = aiohttp.TCPConnector(limit=limit, limit_per_host=limit)
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            if self.raw:
                send = self._pooled_post
            else:

                async def send(body: Body) -> int:
                    return await self._aiohttp_post(session, body)

            if self.rate is None:
                drivers = [asyncio.create_task(self._caller(send, i)) for i in range(self.concurrency)]
            else:
                drivers = [asyncio.create_task(self._arrivals(send))]
            try:
                await asyncio.sleep(WARMUP_S)
                self.done.clear()
                self.sent = 0
                windows: list[Window] = []
                is_steady = False
                while len(windows) < max_windows and not is_steady:
                    windows.append(await self._window(window_s))
                    is_steady = steady(windows, tolerance)
                    if len(windows) >= 2 and all(w.ok == 0 and w.errors + w.overloaded > 0 for w in windows[-2:]):
                        break  # nothing succeeds: more windows would only count more failures
            finally:
                self.running = False
                tasks = [*drivers, *self.in_flight]
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await asyncio.gather(*(c.close() for c in self.connections), return_exceptions=True)
        return windows, is_steady

    async def _window(self, window_s: float) -> Window:
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.sleep(window_s)
        ended, cpu = time.perf_counter(), time.process_time() - cpu
        finished, self.done = self.done, []
        window = Window(duration_s=ended - started, cpu_s=cpu, sent=self.sent)
        self.sent = 0
        for latency, status in finished:
            if 200 <= status < 300:
                window.latencies_ms.append(latency)
            elif status == 503:
                window.overloaded += 1
            else:
                window.errors += 1
        return window

    async def _one(self, send: Any, n: int) -> None:
        body = self.bodies[n % len(self.bodies)]
        self.sent += 1
        start = time.perf_counter()
        status = await send(body)
        self.done.append(((time.perf_counter() - start) * 1000, status))

    async def _aiohttp_post(self, session: Any, body: Body) -> int:
        import aiohttp

        try:
            async with session.post(self.url, data=body.data, headers=body.all_headers()) as response:
                await response.read()
                return response.status
        except (TimeoutError, aiohttp.ClientError, OSError):
            return -1

    async def _pooled_post(self, body: Body) -> int:
        """A POST on an idle kept-alive connection, or a new one: closed-loop callers each end up
        with one of their own, open-loop arrivals share what is free."""
        connection = self.idle.pop() if self.idle else None
        if connection is None:
            connection = Http1Connection(self.url, self.timeout_s, self.request_bytes)
            self.connections.append(connection)
        try:
            return await connection.post(body)
        finally:
            self.idle.append(connection)

    async def _caller(self, send: Any, first: int) -> None:
        n = first
        while self.running:
            await self._one(send, n)
            n += self.concurrency

    async def _arrivals(self, send: Any) -> None:
        """Requests at `rate` a second, on a schedule of absolute times: a late wake-up sends what
        is due at once rather than falling below the rate."""
        gaps = random.Random(self.seed)
        rate = float(self.rate)  # type: ignore[arg-type]
        next_at = time.perf_counter()
        n = 0
        while self.running:
            next_at += gaps.expovariate(rate) if self.distribution == "poisson" else 1 / rate
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(self.in_flight) >= MAX_OPEN:
                self.sent += 1
                self.done.append((0.0, -1))  # no connection free: the target is far behind the rate
                continue
            task = asyncio.create_task(self._one(send, n))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)
            n += 1
