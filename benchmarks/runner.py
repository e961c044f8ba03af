"""Benchmark: a raystore runner against the same model in hand-written raw Ray Serve deployments.

    .venv/bin/python benchmarks/runner.py [--duration SECONDS]

The model is a small numpy MLP (64 -> 256 -> 8, one row per call), cheap enough that the cost of
the serving path dominates. 64 concurrent callers in this process call an entry deployment through
a DeploymentHandle in a closed loop; four entry deployments are compared in pairs:

- served:   raw (entry -> model deployment, plain handle call)   vs  raystore (entry -> runner
            deployment via `runner.predict.async_run`);
- embedded: raw (entry computes the model itself)                 vs  raystore (entry with an
            `embedded=True` runner).

Targets: raystore/raw >= 0.9 for throughput and <= 1.1 for p50 latency in both pairs. The
benchmark starts and stops its own Ray instance.
"""

from __future__ import annotations

import argparse
import asyncio

import numpy as np
import ray
from closed_loop import closed_loop
from ray import serve

import raystore

CALLERS = 64
FEATURES = 64


class Mlp:
    def __init__(self) -> None:
        rng = np.random.default_rng(0)
        self.w1 = rng.standard_normal((FEATURES, 256)).astype(np.float32)
        self.w2 = rng.standard_normal((256, 8)).astype(np.float32)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.maximum(x @ self.w1, 0) @ self.w2


class MlpRunnable(raystore.Runnable):
    def __init__(self) -> None:
        self.mlp = Mlp()

    @raystore.Runnable.method
    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.mlp.predict(x)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
class RawModel:
    def __init__(self) -> None:
        self.mlp = Mlp()

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.mlp.predict(x)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
class RawEntry:
    def __init__(self, model=None) -> None:
        self.model = model
        self.mlp = Mlp() if model is None else None

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        if self.mlp is not None:
            return self.mlp.predict(x)
        return await self.model.predict.remote(x)


@serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
class RunnerEntry:
    def __init__(self, runner) -> None:
        self.runner = runner

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        return await self.runner.predict.async_run(x)


def measure(name: str, app, duration_s: float) -> tuple[float, float, float]:
    handle = serve.run(app, name=name, route_prefix=None)
    result = asyncio.run(closed_loop(handle.remote, np.ones((1, FEATURES), dtype=np.float32), CALLERS, duration_s))
    serve.delete(name)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    args = parser.parse_args()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        served_runner = raystore.Runner(MlpRunnable, name="mlp", resources={"num_cpus": 0.5})
        embedded_runner = raystore.Runner(MlpRunnable, name="mlp_embedded", embedded=True)
        results = {
            ("served", "raw"): measure("raw_served", RawEntry.bind(RawModel.bind()), args.duration),
            ("served", "raystore"): measure("rs_served", RunnerEntry.bind(served_runner.bind()), args.duration),
            ("embedded", "raw"): measure("raw_embedded", RawEntry.bind(), args.duration),
            ("embedded", "raystore"): measure("rs_embedded", RunnerEntry.bind(embedded_runner.bind()), args.duration),
        }
    finally:
        serve.shutdown()
        ray.shutdown()
    print(f"\n{CALLERS} callers through a DeploymentHandle, {args.duration:.0f} s each, 1-row requests\n")
    header = f"{'mode':<9} {'variant':<9} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'thrpt ratio':>11} {'p50 ratio':>9}"
    print(header)
    print("-" * len(header))
    for mode in ("served", "embedded"):
        raw = results[(mode, "raw")]
        for variant in ("raw", "raystore"):
            rps, p50, p99 = results[(mode, variant)]
            ratios = "" if variant == "raw" else f"{rps / raw[0]:>11.2f} {p50 / raw[1]:>9.2f}"
            print(f"{mode:<9} {variant:<9} {rps:>7.0f} {p50:>7.1f} {p99:>7.1f} {ratios}")
    print("\ntargets: throughput ratio >= 0.9, p50 ratio <= 1.1 (raystore / raw, same mode)")


if __name__ == "__main__":
    main()
