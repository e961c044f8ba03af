"""The Ray Serve side of runners: the replica class that hosts a runnable, and the deployments
(one per method, or one for all with `colocate=True`) built from a runner's settings."""

from __future__ import annotations

import gc
import logging
import os
from typing import Any

from raystore.exceptions import InvalidArgument
from raystore.runner.resources import Resources
from raystore.runner.transport import for_the_wire

logger = logging.getLogger("raystore.runner")

# Serve's own per-replica cap on requests in flight; batching needs far more than Serve's default.
MIN_ONGOING_REQUESTS = 64


class RunnerReplica:
    """Hosts one runner (or some of its methods) in a Serve replica: loads the runnable on the
    resources Ray assigned and serves `call(method, ...)` through the runner's batch queues."""

    def __init__(self, runner: Any, methods: tuple[str, ...], num_cpus: float):
        limit_threads(num_cpus)
        self.runner = runner
        self.served_methods = methods
        runner.init_local()
        freeze_startup_heap()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method not in self.served_methods:
            raise InvalidArgument(f"this replica serves {sorted(self.served_methods)}, not {method!r}")
        return for_the_wire(await self.runner._call_local(method, args, kwargs))

    def reconfigure(self, config: dict[str, Any]) -> None:
        """`user_config` per method: {"predict": {"max_batch_size": 64, "max_latency_ms": 50}}."""
        for method, settings in (config or {}).items():
            batched = self.runner._batched.get(method)
            if batched is None:
                continue
            if "max_batch_size" in settings:
                batched.set_max_batch_size(int(settings["max_batch_size"]))
            if "max_latency_ms" in settings:
                batched.set_max_latency_ms(float(settings["max_latency_ms"]))


def freeze_startup_heap() -> None:
    """Exempt what a replica built while starting (torch, Ray, Serve, the model) from the garbage
    collector's full passes. In such a process one full pass walks about 280k objects and took
    150 ms here: a stall that every request in flight waits out, in the latency tail. Objects
    made while serving are collected as usual."""
    gc.collect()  # not to keep start-up garbage forever
    gc.freeze()


def limit_threads(num_cpus: float) -> None:
    """Size the math libraries' thread pools to the CPUs Ray reserved for this replica."""
    threads = str(max(1, int(num_cpus)))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = threads
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def deployment_name(runner_name: str, methods: tuple[str, ...], colocate: bool) -> str:
    if colocate:
        return runner_name
    method = methods[0]
    return f"{runner_name}-{'call' if method == '__call__' else method.strip('_')}"


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has (0 when Ray is not running)."""
    import ray

    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0.0))


def deployment_groups(runner: Any) -> list[tuple[str, ...]]:
    """The methods each deployment serves: all in one with colocate=True, else one each."""
    return [tuple(runner.methods)] if runner.colocate else [(m,) for m in runner.methods]


def deployment_options(runner: Any, methods: tuple[str, ...], actor_options: dict[str, Any] | None) -> dict[str, Any]:
    """Serve deployment options for the deployment serving `methods` (also what `raystore build`
    writes); `actor_options=None` leaves Ray actor options to the code."""
    options: dict[str, Any] = {"name": deployment_name(runner.name, methods, runner.colocate)}
    if actor_options is not None:
        options["ray_actor_options"] = actor_options
    options["max_ongoing_requests"] = max(MIN_ONGOING_REQUESTS, 2 * max(runner.methods[m].max_batch_size for m in methods))
    if runner.autoscaling:
        options["autoscaling_config"] = dict(runner.autoscaling)
    else:
        options["num_replicas"] = runner.num_replicas
    return options


def runner_applications(runner: Any) -> dict[str, Any]:
    """Serve applications for a runner's deployments, keyed by the method each one serves."""
    from ray import serve

    gpus = cluster_gpus()
    spec = runner._spec_copy()
    apps: dict[str, Any] = {}
    total_gpus = 0.0
    for methods in deployment_groups(runner):
        first = runner.methods[methods[0]]
        resources: Resources = first.resources.resolve(gpu_capable=runner.runnable_class.gpu_capable(), cluster_gpus=gpus)
        options = deployment_options(runner, methods, resources.ray_actor_options())
        app = serve.deployment(RunnerReplica).options(**options).bind(spec, methods, resources.num_cpus)
        for method in methods:
            apps[method] = app
        total_gpus += (resources.num_gpus or 0) * (runner.num_replicas if not runner.autoscaling else 1)
    if total_gpus > gpus:
        logger.warning(
            "runner %r asks for %g GPUs in all (replicas x num_gpus per deployment) but the cluster has %g now; "
            "some replicas will wait until GPU nodes join. Lower num_gpus (e.g. 0.5 to share a GPU) otherwise",
            runner.name, total_gpus, gpus,
        )
    return apps
