"""Benchmark: a PyTorch model from the store served on a real GPU, raystore's adaptive batching
against raw Ray Serve deployments on the same GPU and against the model called in-process.

    .venv/bin/python benchmarks/gpu_serving.py [--duration SECONDS] [--width W] [--depth D]

The model is a deep fp16 MLP (1024 -> W x D -> 16; with the defaults, 16 layers of 8192 x 8192,
2 GiB of weights): one row costs about as much GPU time as a few hundred, since every call reads
all the weights, so batching decides the throughput. `CALLERS` callers in this process send
1-row float32 requests back to back through an entry deployment, which calls:

- raw, unbatched:  a Serve deployment holding the model on the GPU, one model call per request;
- raw, @serve.batch: the same with Ray's `@serve.batch` (max_batch_size 256, a 5 ms timeout);
- raystore:        the model saved with `raystore.pytorch.save_model` (batchable `__call__`) and
                   served by `to_runner(resources={"num_gpus": 1})`: loaded from the store onto the
                   GPU that Ray assigned, with the adaptive batcher (max_batch_size 256).

Baseline, measured in the same run: the model called in-process on the GPU at the best batch size
of at most 256 (its rows/s limit) and at batch size 1. Every served answer is checked against the
in-process model. Each served variant holds the whole GPU (`num_gpus: 1`) and runs alone.

Without CUDA (`--device cpu`, with a small --width and --depth) it runs the same paths on the CPU,
which checks the script, not the figures. The benchmark starts and stops its own Ray instance.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import numpy as np
import ray
import torch
from closed_loop import percentile_ms
from ray import serve

import raystore
from raystore import ServiceUnavailable

IN_FEATURES = 1024
OUT_FEATURES = 16
MAX_BATCH = 256


class DeepMLP(torch.nn.Module):
    """fp16 layers on the GPU (fp32 on the CPU, which has no fast fp16); takes and returns float32."""

    def __init__(self, width: int, depth: int, dtype: torch.dtype):
        super().__init__()
        torch.manual_seed(0)
        layers: list[torch.nn.Module] = [torch.nn.Linear(IN_FEATURES, width)]
        for _ in range(depth):
            layers += [torch.nn.ReLU(), torch.nn.Linear(width, width)]
        layers += [torch.nn.ReLU(), torch.nn.Linear(width, OUT_FEATURES)]
        self.net = torch.nn.Sequential(*layers)
        for layer in self.net:
            if isinstance(layer, torch.nn.Linear):  # keep activations bounded through many layers
                torch.nn.init.normal_(layer.weight, std=(1.0 / layer.in_features) ** 0.5)
                torch.nn.init.zeros_(layer.bias)
        self.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.to(self.dtype)).float()

    def on_cuda(self, x: torch.Tensor) -> torch.Tensor:
        """1.0 per row when the input reached the model on a CUDA device: where it really runs."""
        return torch.full((len(x),), float(x.is_cuda))


def _device() -> torch.device:
    return torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")


def _dtype(device: torch.device) -> torch.dtype:
    return torch.float16 if device.type == "cuda" else torch.float32


class _RawModel:
    """The model on this replica's device, as a hand-written Serve deployment holds it."""

    def __init__(self, width: int, depth: int) -> None:
        self.device = _device()
        self.model = DeepMLP(width, depth, _dtype(self.device)).to(self.device).eval()

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.model(torch.from_numpy(x).to(self.device)).cpu().numpy()

    def device_type(self) -> str:
        return self.device.type


@serve.deployment(max_ongoing_requests=512)
class RawUnbatched(_RawModel):
    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self.infer(x)


@serve.deployment(max_ongoing_requests=512)
class RawServeBatch(_RawModel):
    @serve.batch(max_batch_size=MAX_BATCH, batch_wait_timeout_s=0.005)
    async def __call__(self, xs: list[np.ndarray]) -> list[np.ndarray]:
        out = self.infer(np.concatenate(xs))
        return np.split(out, np.cumsum([len(x) for x in xs])[:-1])


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=512)
class RawEntry:
    def __init__(self, model) -> None:
        self.model = model

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        return await self.model.remote(x)

    async def device_type(self) -> str:
        return await self.model.device_type.remote()


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=512)
class RunnerEntry:
    def __init__(self, runner) -> None:
        self.runner = runner

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        return await self.runner.async_run(x)

    async def device_type(self) -> str:
        on_cuda = await self.runner.on_cuda.async_run(np.ones((1, IN_FEATURES), dtype=np.float32))
        return "cuda" if float(on_cuda[0]) == 1.0 else "cpu"


def in_process(model: DeepMLP, device: torch.device) -> tuple[float, int, float]:
    """(best rows/s, its batch size, batch-1 latency in ms) of the model called directly."""
    model = model.to(device).eval()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    results = {}
    for rows in (1, 8, 32, 64, 128, MAX_BATCH):
        x = torch.ones(rows, IN_FEATURES, device=device)
        with torch.inference_mode():
            for _ in range(3):
                model(x)
            sync()
            calls = 0
            started = time.perf_counter()
            while (elapsed := time.perf_counter() - started) < 1.0:
                model(x).cpu()  # as served: the answer comes back to the host
                calls += 1
        results[rows] = (rows * calls / elapsed, elapsed / calls)
    best_rows = max(results, key=lambda r: results[r][0])
    model.cpu()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return results[best_rows][0], best_rows, 1000 * results[1][1]


async def closed_loop(handle, callers: int, duration_s: float, expected: np.ndarray, warmup_s: float = 5.0):
    """(requests/s, p50 ms, p99 ms, requests shed, largest deviation from the in-process answer).

    A shed request (503, `ServiceUnavailable`) is counted, and its caller sends again after the
    delay the answer suggests, as a client honouring Retry-After would."""
    x = np.ones((1, IN_FEATURES), dtype=np.float32)
    latencies: list[float] = []
    shed = 0
    worst = 0.0
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s

    async def caller() -> None:
        nonlocal worst, shed
        while (now := time.perf_counter()) < stop_at:
            try:
                out = await handle.remote(x)
            except ServiceUnavailable as exc:
                shed += now >= measure_from
                await asyncio.sleep(getattr(exc, "retry_after_s", None) or 0.01)
                continue
            if now >= measure_from:
                latencies.append(time.perf_counter() - now)
                worst = max(worst, float(np.abs(np.asarray(out) - expected).max()))

    await asyncio.gather(*[caller() for _ in range(callers)])
    latencies.sort()
    return len(latencies) / duration_s, percentile_ms(latencies, 0.50), percentile_ms(latencies, 0.99), shed, worst


def measure(name: str, app, callers: int, duration_s: float, expected: np.ndarray):
    handle = serve.run(app, name=name, route_prefix=None)
    try:
        device = handle.device_type.remote().result()
        return (device, *asyncio.run(closed_loop(handle, callers, duration_s, expected)))
    finally:
        serve.delete(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--width", type=int, default=8192)
    parser.add_argument("--depth", type=int, default=16)
    parser.add_argument("--callers", type=int, default=256)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    device = torch.device(args.device)
    model = DeepMLP(args.width, args.depth, _dtype(device))  # the same seed gives every copy the same weights
    gpu_name = torch.cuda.get_device_name(0) if device.type == "cuda" else "none (CPU run)"
    limit_rps, limit_rows, one_row_ms = in_process(model, device)
    with torch.inference_mode():
        expected = model(torch.ones(1, IN_FEATURES)).numpy() if device.type == "cpu" else None
    if expected is None:  # the reference answer computed where the model is served
        with torch.inference_mode():
            expected = model.to(device)(torch.ones(1, IN_FEATURES, device=device)).cpu().numpy()
        model.cpu()
        torch.cuda.empty_cache()

    num_gpus = 1 if device.type == "cuda" else 0
    stored = raystore.pytorch.save_model(
        "gpu_bench_mlp", model, signatures={"__call__": {"batchable": True, "batch_dim": 0}, "on_cuda": {}}
    )
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    try:
        actor = {"num_cpus": 1, "num_gpus": num_gpus}
        runner = stored.to_runner(
            resources={"num_cpus": 1, "num_gpus": num_gpus},
            max_batch_size=MAX_BATCH,
            max_latency_ms=50,
            colocate=True,  # the device probe (`on_cuda`) in the same replica as the model
        )
        variants = {
            "raw, unbatched": RawEntry.bind(RawUnbatched.options(ray_actor_options=actor).bind(args.width, args.depth)),
            "raw, @serve.batch": RawEntry.bind(
                RawServeBatch.options(ray_actor_options=actor).bind(args.width, args.depth)
            ),
            "raystore runner": RunnerEntry.bind(runner.bind()),
        }
        results = {}
        for name, app in variants.items():
            results[name] = measure(
                name.replace(" ", "").replace(",", "_").replace("@", ""), app, args.callers, args.duration, expected
            )
    finally:
        serve.shutdown()
        ray.shutdown()
        raystore.models.delete(stored.tag)

    weights_gib = sum(p.numel() * p.element_size() for p in model.parameters()) / 2**30
    print(f"\nGPU: {gpu_name}; model {args.depth} x {args.width} ({weights_gib:.1f} GiB, {model.dtype})")
    print(f"{args.callers} callers through a DeploymentHandle, {args.duration:.0f} s each, 1-row requests\n")
    print(f"in-process limit: {limit_rps:,.0f} rows/s at batch {limit_rows}; one row alone {one_row_ms:.2f} ms\n")
    header = (
        f"{'variant':<18} {'device':>6} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'shed':>6} {'x unbatched':>11} {'x limit':>8}"
        f" {'max |err|':>9}"
    )
    print(header)
    print("-" * len(header))
    unbatched = results["raw, unbatched"][1]
    for name, (device_type, rps, p50, p99, shed, worst) in results.items():
        print(
            f"{name:<18} {device_type:>6} {rps:>8,.0f} {p50:>8.1f} {p99:>8.1f} {shed:>6} {rps / unbatched:>11.2f}"
            f" {rps / limit_rps:>8.3f} {worst:>9.1e}"
        )
    print("\n'x limit' is served requests/s over the in-process rows/s at the best batch size.")


if __name__ == "__main__":
    main()
