"""The Ray Serve side of runners: the replica class that hosts a runnable, the deployments (one per
method, or one for all with `colocate=True`) built from a runner's spec, and `ServedBackend`, how
a caller reaches them through handles."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any

from raystore._private.batching import BatchStats
from raystore._private.replica import HEALTH_CHECK_OPTIONS, freeze_startup_heap, limit_threads
from raystore._private.runner.local import LocalBackend
from raystore._private.runner.resources import Resources
from raystore._private.runner.spec import RunnerSpec
from raystore._private.runner.transport import for_the_wire
from raystore.exceptions import InvalidArgument, RunnerNotReady

logger = logging.getLogger("raystore.runner")

# Serve's own per-replica cap on requests in flight; batching needs far more than Serve's default.
MIN_ONGOING_REQUESTS = 64
# A call whose replica died or became unreachable before answering is sent once more: Serve
# routes it to another replica (its router drops a replica whose call failed so), or holds it
# until the replacement is up. A model call is idempotent, so running it twice is harmless; once,
# not more: an input that crashes its replica must not take down the next ones too.
_RETRY_PAUSE_S = 0.05


class RunnerReplica:
    """Hosts one runner (or some of its methods) in a Serve replica: loads the runnable on the
    resources Ray assigned and serves `call(method, ...)` through the runner's batch queues."""

    def __init__(self, spec: RunnerSpec, methods: tuple[str, ...], num_cpus: float):
        limit_threads(num_cpus)
        self.backend = LocalBackend(spec)
        self.served_methods = methods
        freeze_startup_heap()

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if method not in self.served_methods:
            raise InvalidArgument(f"this replica serves {sorted(self.served_methods)}, not {method!r}")
        return for_the_wire(await self.backend.call_async(method, args, kwargs))

    async def stream(self, method: str, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """A streaming method's pieces, each sent as soon as it is made (Serve streams them)."""
        if method not in self.served_methods:
            raise InvalidArgument(f"this replica serves {sorted(self.served_methods)}, not {method!r}")
        async for piece in self.backend.stream(method, args, kwargs):
            yield for_the_wire(piece)

    def batch_stats(self) -> dict[str, dict[str, Any]]:
        """What this replica's batch queues have done, per batched method (for a service's console)."""
        out = {}
        for method in self.served_methods:
            view = self.backend.stats_view(method)
            if view is not None:
                out[method] = view
        return out

    async def check_health(self) -> None:
        """Serve's periodic health check: this replica's loop answers, and the runnable's own
        `check_health()`, where it defines one, does not raise (an unhealthy replica is replaced)."""
        await self.backend.check_health()

    def reconfigure(self, config: dict[str, Any]) -> None:
        """`user_config` per method: {"predict": {"max_batch_size": 64, "max_latency_ms": 50}}."""
        if not isinstance(config, dict):
            raise InvalidArgument(
                f'a runner\'s user_config is {{METHOD: {{"max_batch_size": N, ...}}}}; got {config!r}'
            )
        for method, settings in config.items():
            self.backend.reconfigure(method, settings)


class ServedBackend:
    """A runner's deployments as the calling replica reaches them: one handle per method.

    `bind()` fills it with the Serve applications of the runner's deployments; when Serve builds
    the calling deployment it replaces each application by its `DeploymentHandle`, so in the
    replica that receives the runner these are handles.
    """

    def __init__(self, spec: RunnerSpec, targets: Mapping[str, Any]):
        self.spec = spec
        self.targets = dict(targets)  # method -> Application (before Serve builds) / DeploymentHandle
        self._handles: dict[str, Any] = {}  # the targets found to be handles, by method
        self._streaming_handles: dict[str, Any] = {}  # the same, with `stream=True`

    def remote(self, name: str, args: tuple, kwargs: dict) -> Any:
        """A `DeploymentResponse`: await it, or pass it to another deployment without materialising it."""
        handle = self._handles.get(name)
        if handle is None:
            handle = self._handle(name)
        return handle.call.remote(name, *for_the_wire(args), **for_the_wire(kwargs))

    def _handle(self, name: str) -> Any:
        from ray.serve.handle import DeploymentHandle

        target = self.targets[name]
        if not isinstance(target, DeploymentHandle):
            raise RunnerNotReady(
                f"runner {self.spec.name!r} is bound but not deployed here: pass runner.bind() to a deployment's "
                ".bind(...) and call the runner from inside that deployment"
            )
        self._handles[name] = target
        return target

    def __getstate__(self) -> dict[str, Any]:
        return {"spec": self.spec, "targets": self.targets, "_handles": {}, "_streaming_handles": {}}

    async def stream(self, name: str, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
        """A streaming method's pieces as its replica yields them; leaving early cancels the call
        there (the replica's batch lets its stream go)."""
        handle = self._streaming_handles.get(name)
        if handle is None:
            handle = self._streaming_handles[name] = self._handle(name).options(stream=True)
        response = handle.stream.remote(name, *for_the_wire(args), **for_the_wire(kwargs))
        finished = False
        try:
            async for piece in response:
                yield piece
            finished = True
        finally:
            if not finished:
                response.cancel()

    async def call_async(self, name: str, args: tuple, kwargs: dict) -> Any:
        return await self.sent_again_if_lost(name, lambda: self.remote(name, args, kwargs))

    async def sent_again_if_lost(self, name: str, send: Callable[[], Any]) -> Any:
        """`await send()`, and once more when the replica it went to was lost."""
        try:
            return await send()
        except Exception as exc:
            if not _replica_lost(exc):
                raise
            self._log_retry(name, exc)
        await asyncio.sleep(_RETRY_PAUSE_S)
        return await send()

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        try:
            return self.remote(name, args, kwargs).result()
        except Exception as exc:
            if not _replica_lost(exc):
                raise
            self._log_retry(name, exc)
        time.sleep(_RETRY_PAUSE_S)
        return self.remote(name, args, kwargs).result()

    def _log_retry(self, name: str, exc: Exception) -> None:
        logger.warning(
            "runner %r: the replica serving a %s call was lost (%s); sending it once more",
            self.spec.name,
            name,
            type(exc).__name__,
        )

    def stats(self, name: str) -> BatchStats | None:
        return None  # the queues live in the runner's replicas (their Ray metrics tell)

    def stats_view(self, name: str) -> dict[str, Any] | None:
        return None  # as `stats`; `replica_stats` asks a replica

    async def replica_stats(self, name: str) -> dict[str, Any] | None:
        """What the batch queue of `name` has done in one of the runner's replicas (the one Serve
        routes this call to), as `BatchStats.as_dict()`; None for a method that is not batched."""
        return (await self._handle(name).batch_stats.remote()).get(name)


def remote_cause(exc: Exception) -> Exception:
    """The error as raised in the replica a call went to: Ray wraps it (RayTaskError), `.cause`."""
    while isinstance(getattr(exc, "cause", None), Exception):
        exc = exc.cause  # type: ignore[attr-defined]
    return exc


def _replica_lost(exc: BaseException) -> bool:
    """Whether a call failed because its replica died or could not be reached (Ray's
    `RayActorError`), as opposed to the model raising: only the first is worth sending again."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayTaskError):  # an error raised inside the replica, even one about another actor
        return False
    return isinstance(exc, RayActorError)


def deployment_name(spec: RunnerSpec, methods: tuple[str, ...]) -> str:
    if spec.colocate:
        return spec.name
    method = methods[0]
    return f"{spec.name}-{'call' if method == '__call__' else method.strip('_')}"


def cluster_gpus() -> float:
    """GPUs the connected Ray cluster has (0 when Ray is not running)."""
    import ray

    if not ray.is_initialized():
        return 0.0
    return float(ray.cluster_resources().get("GPU", 0.0))


def deployment_groups(spec: RunnerSpec) -> list[tuple[str, ...]]:
    """The methods each deployment serves: all in one with colocate=True, else one each."""
    return [tuple(spec.methods)] if spec.colocate else [(m,) for m in spec.methods]


def ongoing_requests_for(max_batch_sizes: Iterable[int]) -> int:
    """Serve's `max_ongoing_requests` for a replica batching up to these sizes: two full batches
    (one running, one filling), and never less than `MIN_ONGOING_REQUESTS`."""
    return max(MIN_ONGOING_REQUESTS, 2 * max(max_batch_sizes, default=1))


def deployment_options(
    spec: RunnerSpec, methods: tuple[str, ...], actor_options: dict[str, Any] | None
) -> dict[str, Any]:
    """Serve deployment options for the deployment serving `methods` (also what `raystore build`
    writes); `actor_options=None` leaves Ray actor options to the code."""
    options: dict[str, Any] = {"name": deployment_name(spec, methods)}
    if actor_options is not None:
        options["ray_actor_options"] = actor_options
    options["max_ongoing_requests"] = ongoing_requests_for(spec.methods[m].batch.max_batch_size for m in methods)
    options.update(HEALTH_CHECK_OPTIONS)
    if spec.autoscaling:
        options["autoscaling_config"] = dict(spec.autoscaling)
    else:
        options["num_replicas"] = spec.num_replicas
    return options


def runner_applications(spec: RunnerSpec) -> dict[str, Any]:
    """Serve applications for a runner's deployments, keyed by the method each one serves."""
    from ray import serve

    gpus = cluster_gpus()
    apps: dict[str, Any] = {}
    total_gpus = 0.0
    for methods in deployment_groups(spec):
        first = spec.methods[methods[0]]
        resources: Resources = first.resources.resolve(gpu_capable=spec.runnable_class.gpu_capable(), cluster_gpus=gpus)
        options = deployment_options(spec, methods, resources.ray_actor_options())
        app = serve.deployment(RunnerReplica).options(**options).bind(spec, methods, resources.num_cpus)
        for method in methods:
            apps[method] = app
        total_gpus += (resources.num_gpus or 0) * (spec.num_replicas if not spec.autoscaling else 1)
    if total_gpus > gpus:
        logger.warning(
            "runner %r asks for %g GPUs in all (replicas x num_gpus per deployment) but the cluster has %g now; "
            "some replicas will wait until GPU nodes join. Lower num_gpus (e.g. 0.5 to share a GPU) otherwise",
            spec.name,
            total_gpus,
            gpus,
        )
    return apps
