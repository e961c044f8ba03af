"""Runnables and deployments for the runner tests (importable by Ray workers: tests/ is on their path)."""

import os

import numpy as np
from ray import serve

import raystore


class Placement(raystore.Runnable):
    """Reports where its replica runs."""

    SUPPORTED_RESOURCES = ("nvidia.com/gpu", "cpu")

    @raystore.Runnable.method
    def where(self) -> dict:
        import ray

        context = ray.get_runtime_context()
        return {
            "replica": serve.get_replica_context().replica_id.unique_id,
            "deployment": serve.get_replica_context().deployment,
            "resources": context.get_assigned_resources(),
            "gpu_ids": [str(g) for g in ray.get_gpu_ids()],
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "omp_threads": os.environ.get("OMP_NUM_THREADS"),
        }

    @raystore.Runnable.method(batchable=True, batch_dim=(1, 0))
    def transpose_plus(self, x: np.ndarray) -> np.ndarray:
        return x.T + 1000


@serve.deployment(ray_actor_options={"num_cpus": 0.05}, max_ongoing_requests=512)
class Caller:
    """Another deployment calling a runner through handles, as a Service would."""

    def __init__(self, runner):
        self.runner = runner

    async def __call__(self, method: str, *args):
        return await getattr(self.runner, method).async_run(*args)

    async def chained(self, x):
        # a response passed along without materialising it in this replica
        first = self.runner.transpose_plus.remote(x)
        return await first


class Slow(raystore.Runnable):
    """Answers after a pause, with the pid of the replica that answered: calls are in flight when
    a replica is killed."""

    @raystore.Runnable.method
    def echo(self, x: int) -> tuple[int, int]:
        import time

        time.sleep(0.05)
        return x, os.getpid()


class Sickly(raystore.Runnable):
    """Falls ill when told: its health check raises once `marker` holds its replica's pid."""

    def __init__(self, marker: str):
        self.marker = marker

    @raystore.Runnable.method
    def pid(self) -> int:
        return os.getpid()

    def check_health(self) -> None:
        try:
            with open(self.marker) as f:
                ill = f.read().strip() == str(os.getpid())
        except FileNotFoundError:
            ill = False
        if ill:
            raise RuntimeError("told to be ill")
