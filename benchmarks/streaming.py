"""Benchmark: streaming batches. `raystore.batch` with continuous batching against Ray Serve's
`@serve.batch` on an async generator (static batches), in one Serve replica.

    .venv/bin/python benchmarks/streaming.py [--duration SECONDS] [--rounds N] [--streams 64]

A synthetic generative model: each step of a batch holds one exclusive device for `a + b * rows`
seconds (a = 10 ms, b = 0.2 ms per stream still generating) and gives every stream one token.
`--streams` clients (64) each open a stream, read it to its end, think for 0-100 ms, and open the
next one, for `--duration` seconds after a 1 s warm-up; they start spread over the first 0.5 s.
Two workloads:

- `fixed`: every stream is 50 tokens long;
- `mixed`: streams are 1 to 99 tokens long (50 on average), as answers of a language model are.

Three batchers, each a method of the same replica, driven by the clients from inside it (so
nothing but the batching differs; no proxy, no handle):

- `@serve.batch`: Ray Serve's, a generator yielding one list per step, each caller's item or
  `StopIteration` once its stream is done; a batch keeps its callers until the longest is done,
  and new streams wait for it to end. Its `batch_wait_timeout_s` (0, 10, 50, 200, 500 ms) and
  `max_concurrent_batches` (1, 8) are swept once per workload (for half the duration) and the
  best kept. (Serve cuts a batch from what has queued as soon as the last one was cut, not when a
  slot frees, so with one batch at a time, batches queue up small behind the running one);
- `raystore static`: `raystore.batch` on the same generator, without `continuous` (the same
  static batches, with raystore's adaptive wait);
- `raystore continuous`: `continuous=True`: finished streams leave and waiting ones join between
  two steps.

Reported: tokens/s over all streams, time to first token (TTFT) p50 and p99 of the streams opened
in the measured window, mean rows per step, and tokens/s as a ratio to `@serve.batch`'s. Medians
over `--rounds` interleaved rounds. The benchmark starts and stops its own Ray instance.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time

import ray
from ray import serve

import raystore

A_S, B_S = 0.010, 0.0002
MAX_BATCH = 64
WARMUP_S = 1.0
SERVE_TIMEOUTS_S = (0.0, 0.01, 0.05, 0.2, 0.5)
SERVE_CONCURRENT = 8  # a `@serve.batch` variant with this many batches at once (their steps share the device)


class Device:
    """One accelerator: a step of any batch holds it for `a + b * rows` seconds."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.steps = 0
        self.rows = 0

    async def step(self, rows: int) -> None:
        async with self.lock:
            await asyncio.sleep(A_S + B_S * rows)
        self.steps += 1
        self.rows += rows


async def static_steps(device: Device, lengths: list[int]):
    """A static batch: every stream's token of each step (`StopIteration` once it is done) until
    the longest is done; a step costs the rows still generating."""
    produced = [0] * len(lengths)
    while any(p < n for p, n in zip(produced, lengths)):
        await device.step(sum(p < n for p, n in zip(produced, lengths)))
        out = []
        for i, n in enumerate(lengths):
            if produced[i] < n:
                produced[i] += 1
                out.append(produced[i])
            else:
                out.append(StopIteration)
        yield out


@serve.deployment(max_ongoing_requests=8, ray_actor_options={"num_cpus": 1})
class StreamingBench:
    def __init__(self) -> None:
        self.device = Device()
        self.serve_concurrent = 1

    # ---- the three batchers; a stream of `n` tokens is the caller's `n` -------------------------

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.01)
    async def serve_static(self, lengths: list[int]):
        async for out in static_steps(self.device, lengths):
            yield out

    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.01, max_concurrent_batches=SERVE_CONCURRENT)
    async def serve_static_concurrent(self, lengths: list[int]):
        async for out in static_steps(self.device, lengths):
            yield out

    @raystore.batch(max_batch_size=MAX_BATCH)
    async def raystore_static(self, lengths: list[int]):
        async for out in static_steps(self.device, lengths):
            yield out

    @raystore.batch(max_batch_size=MAX_BATCH, continuous=True)
    async def raystore_continuous(self, lengths: list[int]):
        rows = [[n, 0] for n in lengths]  # [length, produced]
        while rows:
            await self.device.step(len(rows))
            out = []
            for row in rows:
                row[1] += 1
                out.append(row[1] if row[1] <= row[0] else StopIteration)
            update = yield out
            rows = update.keep(rows)
            if update.joined:
                rows += [[n, 0] for n in update.joined["lengths"]]

    # ---- the clients ----------------------------------------------------------------------------

    def _stream(self, batcher: str, length: int):
        if batcher == "serve":
            return self.serve_static(length) if self.serve_concurrent == 1 else self.serve_static_concurrent(length)
        if batcher == "raystore static":
            return self.raystore_static([length])
        return self.raystore_continuous([length])

    async def run(self, batcher: str, workload: str, streams: int, duration_s: float, seed: int) -> dict:
        """`streams` clients on `batcher` for `duration_s` after the warm-up: what they got."""
        self.device.steps = self.device.rows = 0
        start = time.perf_counter()
        measure_from, stop_at = start + WARMUP_S, start + WARMUP_S + duration_s
        ttfts: list[float] = []
        tokens = 0
        steps_at = {}

        async def client(rng: random.Random) -> None:
            nonlocal tokens
            await asyncio.sleep(rng.uniform(0, 0.5))
            while time.perf_counter() < stop_at:
                length = 50 if workload == "fixed" else rng.randint(1, 99)
                opened = time.perf_counter()
                first = True
                async for _ in self._stream(batcher, length):
                    now = time.perf_counter()
                    if first and measure_from <= opened < stop_at:
                        ttfts.append(now - opened)
                    first = False
                    if measure_from <= now < stop_at:
                        tokens += 1
                await asyncio.sleep(rng.uniform(0, 0.1))

        async def mark() -> None:
            await asyncio.sleep(measure_from - time.perf_counter())
            steps_at["from"] = (self.device.steps, self.device.rows)
            await asyncio.sleep(stop_at - time.perf_counter())
            steps_at["to"] = (self.device.steps, self.device.rows)

        await asyncio.gather(mark(), *(client(random.Random(seed * 1000 + i)) for i in range(streams)))
        steps = steps_at["to"][0] - steps_at["from"][0]
        rows = steps_at["to"][1] - steps_at["from"][1]
        ttfts.sort()
        return {
            "tokens_per_s": tokens / duration_s,
            "ttft_p50_ms": 1000 * ttfts[len(ttfts) // 2] if ttfts else float("nan"),
            "ttft_p99_ms": 1000 * ttfts[min(len(ttfts) - 1, int(len(ttfts) * 0.99))] if ttfts else float("nan"),
            "rows_per_step": rows / steps if steps else 0.0,
        }

    def configure_serve(self, timeout_s: float, concurrent: int) -> None:
        """Which `@serve.batch` the "serve" batcher is: its wait, and 1 or SERVE_CONCURRENT batches at once."""
        self.serve_concurrent = concurrent
        self.serve_static.set_batch_wait_timeout_s(timeout_s)
        self.serve_static_concurrent.set_batch_wait_timeout_s(timeout_s)


def median_row(results: list[dict]) -> dict:
    return {key: statistics.median(r[key] for r in results) for key in results[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=64)
    args = parser.parse_args()

    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=100 * 1024 * 1024, log_to_driver=False)
    try:
        handle = serve.run(StreamingBench.bind(), name="streaming_bench", route_prefix=None)
        rows = []
        for workload in ("fixed", "mixed"):
            best_setting, best = (SERVE_TIMEOUTS_S[0], 1), -1.0
            for setting in [
                (t, c) for c in (1, SERVE_CONCURRENT) for t in SERVE_TIMEOUTS_S
            ]:  # the baseline at its best
                handle.configure_serve.remote(*setting).result()
                result = handle.run.remote("serve", workload, args.streams, args.duration / 2, 99).result(timeout_s=600)
                print(
                    f"  {workload}: @serve.batch batch_wait_timeout_s={setting[0]:g} max_concurrent_batches={setting[1]}: "
                    f"{result['tokens_per_s']:.0f} tokens/s, TTFT p99 {result['ttft_p99_ms']:.0f} ms"
                )
                if result["tokens_per_s"] > best:
                    best_setting, best = setting, result["tokens_per_s"]
            handle.configure_serve.remote(*best_setting).result()
            per_batcher: dict[str, list[dict]] = {"serve": [], "raystore static": [], "raystore continuous": []}
            for round_index in range(args.rounds):
                for batcher in per_batcher:
                    result = handle.run.remote(batcher, workload, args.streams, args.duration, round_index).result(
                        timeout_s=600
                    )
                    per_batcher[batcher].append(result)
            baseline = median_row(per_batcher["serve"])
            for batcher, results in per_batcher.items():
                row = median_row(results)
                name = (
                    f"@serve.batch ({best_setting[0] * 1000:g} ms, {best_setting[1]}x)"
                    if batcher == "serve"
                    else batcher
                )
                rows.append((workload, name, row, row["tokens_per_s"] / baseline["tokens_per_s"]))
    finally:
        serve.shutdown()
        ray.shutdown()

    print()
    print(
        f"Streaming: {args.streams} streams, step = {A_S * 1000:g} ms + {B_S * 1000:g} ms x rows, "
        f"max {MAX_BATCH} rows; {args.duration:g} s measured, median of {args.rounds} rounds"
    )
    print(
        f"{'workload':<8} {'batcher':<24} {'tokens/s':>9} {'TTFT p50':>9} {'TTFT p99':>9} {'rows/step':>9} {'ratio':>6}"
    )
    for workload, name, row, ratio in rows:
        print(
            f"{workload:<8} {name:<24} {row['tokens_per_s']:>9.0f} {row['ttft_p50_ms']:>7.0f}ms "
            f"{row['ttft_p99_ms']:>7.0f}ms {row['rows_per_step']:>9.1f} {ratio:>6.2f}"
        )


if __name__ == "__main__":
    main()
