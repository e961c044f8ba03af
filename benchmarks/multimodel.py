"""Benchmark: many versions of one model behind one runner (`raystore.models.runner_for`) against
one deployment serving one version, with the same traffic.

    .venv/bin/python benchmarks/multimodel.py [--duration SECONDS] [--rounds 3] [--versions 20] [--callers 64]

20 versions of a small numpy MLP (64 -> 256 -> 8, a different seed each) are saved in a temporary
store. 64 callers in this process call an entry deployment through a DeploymentHandle in a closed
loop, one row a call. Each call's version is the next of one request trace drawn from a Zipf
distribution (s = 1.1) over the versions, so a few are hot and most are cold.

- baseline: the entry calls a plain runner of one version (2 replicas);
- versions: the entry calls `runner_for(NAME, max_models_per_replica=4)` (2 replicas, so 8
  versions held at most) with each call's version: first over 8 versions (Zipf too), which the
  replicas can hold between them once routing has settled (the hit path), then over all 20.

It reports throughput and p99 of both; the loads the replicas made after the 2 s of warm-up
against an ideal LRU cache of 8 versions simulated on the same calls (in the order they were sent,
warmed by the warm-up's); and the p99 of the calls that waited for a load, as the replicas timed
them.

Targets: throughput >= 0.9x the single-version deployment; loads <= 1.2x the simulated LRU.
Starts and stops its own Ray; the store is a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np

FEATURES = 64
REPLICAS = 2
PER_REPLICA = 4
CALL_TIMEOUT_S = 60.0  # a call unanswered this long means the server stalled: stop, loudly


class Mlp:
    def __init__(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((FEATURES, 256)).astype(np.float32)
        self.w2 = rng.standard_normal((256, 8)).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.w1, 0) @ self.w2


def zipf_trace(versions: int, length: int, s: float = 1.1, seed: int = 0) -> np.ndarray:
    """Indices of versions, rank k drawn with probability proportional to 1 / k**s."""
    weights = 1.0 / np.arange(1, versions + 1) ** s
    return np.random.default_rng(seed).choice(versions, size=length, p=weights / weights.sum())


def lru_loads(trace: list[str], capacity: int, count_from: int = 0) -> int:
    """Misses of an LRU cache of `capacity` on `trace`, counted from call `count_from` on (the
    cache is warmed by the calls before)."""
    held: list[str] = []
    loads = 0
    for i, item in enumerate(trace):
        if item in held:
            held.remove(item)
        else:
            loads += i >= count_from
            if len(held) == capacity:
                held.pop(0)
        held.append(item)
    return loads


def percentile_ms(values: list[float], q: float) -> float:
    values = sorted(values)
    return 1000 * values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def traced_closed_loop(call, versions, trace, callers: int, duration_s: float, at_measure_start=None):
    """(calls/s, p50 ms, p99 ms, versions in the order sent, calls sent in warm-up, what
    `at_measure_start()` returned when measuring began) of `callers` callers in a closed loop, each
    call taking the next version of `trace`; 2 s of warm-up are not measured."""
    x = np.ones((1, FEATURES), dtype=np.float32)
    latencies: list[float] = []
    sent: list[str] = []
    start = time.perf_counter()
    measure_from, stop_at = start + 2.0, start + 2.0 + duration_s
    marks: dict[str, Any] = {}

    async def mark() -> None:
        await asyncio.sleep(measure_from - time.perf_counter())
        marks["warm"] = len(sent)
        marks["snapshot"] = await at_measure_start() if at_measure_start else None

    async def caller() -> None:
        while (now := time.perf_counter()) < stop_at:
            version = versions[trace[len(sent) % len(trace)]]
            sent.append(version)
            try:
                await asyncio.wait_for(call(x, version), CALL_TIMEOUT_S)
            except TimeoutError:
                raise SystemExit(
                    f"a call for version {version} got no answer in {CALL_TIMEOUT_S:.0f} s: stalled"
                ) from None
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)

    await asyncio.gather(mark(), *[caller() for _ in range(callers)])
    latencies.sort()
    rps, p50, p99 = len(latencies) / duration_s, percentile_ms(latencies, 0.5), percentile_ms(latencies, 0.99)
    return rps, p50, p99, sent, marks["warm"], marks["snapshot"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--versions", type=int, default=20)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    os.environ["RAYSTORE_HOME"] = tempfile.mkdtemp(prefix="raystore-multimodel-")
    import ray
    from ray import serve

    import raystore

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=256)
    class Entry:
        def __init__(self, runner) -> None:
            self.runner = runner

        async def __call__(self, x: np.ndarray, version: str | None) -> np.ndarray:
            if version is None:
                return await self.runner.predict.async_run(x)
            return await self.runner.predict.async_run(x, version=version)

    tags = [
        raystore.picklable_model.save_model("mlp", Mlp(seed), signatures={"predict": {"batchable": True}}).tag
        for seed in range(args.versions)
    ]
    versions = [t.version for t in tags]
    trace = zipf_trace(args.versions, 200_000)
    resources = {"num_cpus": 0.5}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:

        def single_version(app: str) -> tuple:
            single = raystore.models.get(tags[0]).to_runner(name=app, resources=resources, num_replicas=REPLICAS)
            handle = serve.run(Entry.bind(single.bind()), name=app, route_prefix=None)
            base = asyncio.run(
                traced_closed_loop(lambda x, v: handle.remote(x, None), versions, trace, args.callers, args.duration)
            )
            serve.delete(app)
            return base

        def versioned(app: str, trace: np.ndarray) -> tuple[tuple, dict[int, dict]]:
            many = raystore.models.runner_for(
                "mlp", name=app, max_models_per_replica=PER_REPLICA, resources=resources, num_replicas=REPLICAS
            )
            handle = serve.run(Entry.bind(many.bind()), name=app, route_prefix=None)
            stats = serve.get_deployment_handle(app, app).stats

            async def replica_stats() -> dict[int, dict]:
                found: dict[int, dict] = {}
                deadline = time.time() + 30
                while len(found) < REPLICAS and time.time() < deadline:
                    one = await stats.remote()
                    found[one["pid"]] = one
                return found

            result = asyncio.run(
                traced_closed_loop(
                    lambda x, v: handle.remote(x, v), versions, trace, args.callers, args.duration, replica_stats
                )
            )
            replicas = asyncio.run(replica_stats())
            serve.delete(app)
            return result, replicas

        # Each round measures the three in turn, so that a machine speeding up or slowing down
        # affects them alike; the hit path is traffic over as many versions as the replicas hold.
        hot_trace = zipf_trace(REPLICAS * PER_REPLICA, 200_000)
        rounds = []
        for i in range(args.rounds):
            rounds.append((single_version(f"single{i}"), versioned(f"hot{i}", hot_trace), versioned(f"zipf{i}", trace)))
            print(f"round {i + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        serve.shutdown()
        ray.shutdown()

    print(
        f"\n{args.versions} versions, Zipf s=1.1, {args.callers} callers through a DeploymentHandle, "
        f"{args.duration:.0f} s each, 1-row requests, {REPLICAS} replicas x {PER_REPLICA} versions, "
        f"median of {args.rounds} rounds\n"
    )
    header = (
        f"{'variant':<22} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'req/s ratio':>11} {'p99 ratio':>9} "
        f"{'loads':>6} {'ideal':>6} {'ratio':>6} {'cold p99':>8}"
    )
    print(header)
    print("-" * len(header))
    names = ("one version", f"{REPLICAS * PER_REPLICA} versions (all held)", f"{args.versions} versions")
    for column, name in enumerate(names):
        cells = [one[column] for one in rounds]
        results = [c if column == 0 else c[0] for c in cells]
        rps, p50, p99 = (statistics.median(r[k] for r in results) for k in range(3))
        line = f"{name:<22} {rps:>7.0f} {p50:>7.1f} {p99:>7.1f}"
        if column:
            rps_ratio = statistics.median(c[0][0] / one[0][0] for c, one in zip(cells, rounds, strict=True))
            p99_ratio = statistics.median(c[0][2] / one[0][2] for c, one in zip(cells, rounds, strict=True))
            loads = [_loads(c) for c in cells]
            cold = [t for c in cells for s in c[1].values() for t in s["cold_seconds"]]
            line += (
                f" {rps_ratio:>11.2f} {p99_ratio:>9.2f} {statistics.median(x[0] for x in loads):>6.0f}"
                f" {statistics.median(x[1] for x in loads):>6.0f}"
                f" {statistics.median(x[0] / max(x[1], 1) for x in loads):>6.2f} {percentile_ms(cold, 0.99):>8.0f}"
            )
        print(line)
    print("\nreq/s ratio of each round (the spread is the machine's noise):")
    for column, name in list(enumerate(names))[1:]:
        ratios = [one[column][0][0] / one[0][0] for one in rounds]
        loads = [_loads(one[column]) for one in rounds]
        print(
            f"{name:<22} "
            + " ".join(f"{r:.2f}" for r in ratios)
            + "   loads/ideal "
            + " ".join(f"{a}/{b}" for a, b in loads)
        )
    print(
        "\nloads: by the replicas after the 2 s warm-up; ideal: an LRU of "
        f"{REPLICAS * PER_REPLICA} on the same calls, warmed by the warm-up's; cold p99: of the calls that "
        "waited for a load, timed in the replica, in ms"
    )
    print("targets: hit path (all held) req/s ratio >= 0.9; loads <= 1.2x the ideal LRU")


def _loads(cell: tuple) -> tuple[int, int]:
    """(loads after warm-up, ideal LRU loads on the same calls) of one versioned measurement."""
    result, replicas = cell
    sent, warm, at_start = result[3], result[4], result[5]
    loads = sum(s["loads"] for s in replicas.values()) - sum(s["loads"] for s in at_start.values())
    return loads, lru_loads(sent, REPLICAS * PER_REPLICA, count_from=warm)


if __name__ == "__main__":
    sys.exit(main())
