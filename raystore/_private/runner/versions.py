"""Many versions of one model behind one runner: every call names a version (an exact one, an
alias, `latest` or none), and a replica holds up to `max_models_per_replica` of them.

- `VersionResolver`: a tag's version part -> the exact version, in the caller; `latest` and
  aliases move, so what they mean is looked up again after `RESOLVE_TTL_S`.
- `VersionPool`: the versions one process holds, each a `LocalBackend` with its own batch queues
  (batches never mix versions). A version loads on first use, once however many requests ask at
  the same moment; when the pool is full, the least recently used version with no request in
  flight is evicted (a load waits for one to become idle rather than break a request).
- `VersionsReplica`: the Serve deployment hosting a pool. It tells Serve's router which versions
  it holds (Serve's model multiplexing), so that a version's requests go where it is loaded.
- `VersionedRunner`: the `Runner` users hold (`raystore.models.runner_for(NAME)`);
  `await runner.predict.async_run(x, version="prod")`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from typing import Any

from raystore._private.metric_buffer import MetricBuffer
from raystore._private.replica import freeze_startup_heap, limit_threads, serve_replica_context
from raystore._private.runner.local import LocalBackend, _LoopThread
from raystore._private.runner.model import Model, runnable_for
from raystore._private.runner.runner import Backend, Runner
from raystore._private.runner.served import ServedBackend, cluster_gpus, deployment_options
from raystore._private.runner.spec import RunnerSpec
from raystore._private.runner.transport import for_the_wire
from raystore._private.store import default_store
from raystore._private.store.model_store import ModelStore
from raystore.exceptions import InvalidArgument
from raystore.tag import LATEST, Tag

logger = logging.getLogger("raystore.runner")

RESOLVE_TTL_S = 2.0  # how long what `latest` or an alias means is trusted before it is looked up again
VERSION_KWARG = "version"


@dataclasses.dataclass(frozen=True)
class VersionsOptions:
    model: str  # the store name whose versions the runner serves
    max_models_per_replica: int = 4
    gpu_memory_fraction: float | None = None  # evict idle versions while the GPU holds more than this

    def __post_init__(self) -> None:
        limit = self.max_models_per_replica
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgument(f"max_models_per_replica must be a positive int, got {limit!r}")
        fraction = self.gpu_memory_fraction
        if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise InvalidArgument(f"gpu_memory_fraction must be in (0, 1], got {fraction!r}")


class VersionResolver:
    """A call's version (None, `latest`, an alias, a prefix, an exact version) -> the exact version."""

    def __init__(self, store: ModelStore, model: str, ttl_s: float = RESOLVE_TTL_S):
        self.store = store
        self.model = model
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[float, str]] = {}  # asked -> (when looked up, exact version)

    def cached(self, asked: str | None) -> str | None:
        hit = self._known.get(asked or LATEST)
        if hit is None:
            return None
        looked_up, exact = hit
        if exact == asked or time.monotonic() - looked_up < self.ttl_s:  # an exact version never moves
            return exact
        return None

    def resolve(self, asked: str | None) -> str:
        exact = self.cached(asked)
        if exact is None:
            if asked is not None and not isinstance(asked, str):
                raise InvalidArgument(f"version must be a string (a version, an alias or 'latest'), got {asked!r}")
            exact = self.store.resolve(Tag(self.model, asked or LATEST)).version
            self._known[asked or LATEST] = (time.monotonic(), exact)
        return exact

    async def resolve_async(self, asked: str | None) -> str:
        exact = self.cached(asked)
        return exact if exact is not None else await asyncio.to_thread(self.resolve, asked)


@dataclasses.dataclass
class _Held:
    backend: LocalBackend
    in_flight: int = 0


class VersionPool:
    """The versions of one model this process holds (see the module's docstring)."""

    def __init__(
        self,
        spec: RunnerSpec,
        options: VersionsOptions,
        on_change: Callable[[list[str]], None] | None = None,
        metrics: VersionMetrics | None = None,
    ):
        self.spec = spec  # the template: methods, batching, resources; each version brings its runnable
        self.options = options
        self.on_change = on_change
        self.metrics = metrics
        self.held: OrderedDict[str, _Held] = OrderedDict()  # least recently used first
        self._loading: dict[str, asyncio.Future] = {}
        self._reserved = 0  # room taken by loads in progress
        self._idle: asyncio.Event | None = None  # set when a request ends: an eviction may be possible
        self.loads = 0
        self.evictions = 0
        self.load_seconds = 0.0
        self.requests: Counter[str] = Counter()
        self.cold_seconds: deque[float] = deque(maxlen=10_000)  # latencies of calls that waited for a load

    async def call(self, version: str, method: str, args: tuple, kwargs: dict) -> Any:
        started = time.perf_counter()
        held, waited = await self._acquire(version)
        self.requests[version] += 1
        if self.metrics is not None:
            self.metrics.request(version)
        try:
            return await held.backend.call_async(method, args, kwargs)
        finally:
            held.in_flight -= 1
            if held.in_flight == 0 and self._idle is not None:
                self._idle.set()
            if waited:
                self.cold_seconds.append(time.perf_counter() - started)

    async def _acquire(self, version: str) -> tuple[_Held, bool]:
        """The held version, with one more request in flight; and whether this call waited for a load."""
        waited = False
        while True:
            held = self.held.get(version)
            if held is not None:
                self.held.move_to_end(version)
                held.in_flight += 1  # counted before any await: it cannot be evicted from here on
                return held, waited
            waited = True
            loading = self._loading.get(version)
            if loading is None:
                loading = self._loading[version] = asyncio.ensure_future(self._load(version))
            await asyncio.shield(loading)  # a load failure reaches every caller; a cancelled caller leaves it be

    async def _load(self, version: str) -> None:
        try:
            await self._make_room()
            self._reserved += 1
            try:
                started = time.perf_counter()
                spec = await asyncio.to_thread(version_spec, self.spec, version)
                backend = await asyncio.to_thread(LocalBackend, spec)  # loads the model
                took = time.perf_counter() - started
                self.load_seconds += took
                self.loads += 1
                self.held[version] = _Held(backend)
                if self.metrics is not None:
                    self.metrics.loaded(took, len(self.held))
            finally:
                self._reserved -= 1
            logger.info("runner %r loaded version %s (%d held)", self.spec.name, version, len(self.held))
            self._changed()
        finally:
            self._loading.pop(version, None)

    async def _make_room(self) -> None:
        """Evict idle versions, least recently used first, until one more fits; wait for a request
        to end while every held version has one in flight."""
        while len(self.held) + self._reserved >= self.options.max_models_per_replica or self._gpu_over_budget():
            victim = next((v for v, h in self.held.items() if h.in_flight == 0), None)
            if victim is None:
                if len(self.held) + self._reserved < self.options.max_models_per_replica:
                    return  # over the GPU budget with nothing idle: load anyway rather than wait forever
                self._idle = self._idle or asyncio.Event()
                self._idle.clear()
                await self._idle.wait()
                continue
            held = self.held.pop(victim)
            self.evictions += 1
            if self.metrics is not None:
                self.metrics.evicted(len(self.held))
            await asyncio.to_thread(held.backend.close)
            logger.info("runner %r evicted version %s (%d held)", self.spec.name, victim, len(self.held))
            self._changed()

    def _gpu_over_budget(self) -> bool:
        fraction = self.options.gpu_memory_fraction
        if fraction is None or not self.held:
            return False
        try:
            import torch
        except ImportError:
            return False
        if not torch.cuda.is_available():
            return False
        free, total = torch.cuda.mem_get_info()
        return (total - free) / total > fraction

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change(list(self.held))
            except Exception as exc:  # routing is an optimisation: a failed report costs loads, not answers
                logger.warning("could not report the versions held to Serve: %s", exc)

    def stats(self) -> dict[str, Any]:
        return {
            "held": list(self.held),
            "loads": self.loads,
            "evictions": self.evictions,
            "load_seconds": self.load_seconds,
            "requests": dict(self.requests),
            "cold_seconds": list(self.cold_seconds),
            "pid": os.getpid(),
        }

    def close(self) -> None:
        for held in self.held.values():
            held.backend.close()
        self.held.clear()


def version_spec(template: RunnerSpec, version: str) -> RunnerSpec:
    """The spec of one version: the template's batching and resources, the version's own runnable."""
    stored = template.models[0]  # the store it came from, wherever this runs
    model = Model.of(stored.store.get(Tag(stored.tag.name, version)))
    runnable = runnable_for(model)
    missing = sorted(set(template.methods) - set(runnable.methods))
    if missing:
        raise InvalidArgument(f"{model.tag} has no signatures {missing}, which the runner serves; save it with them")
    return dataclasses.replace(template, runnable_class=runnable, models=(model,))


def _pop_version(kwargs: dict) -> tuple[str | None, dict]:
    if VERSION_KWARG not in kwargs:
        return None, kwargs
    rest = dict(kwargs)
    return rest.pop(VERSION_KWARG), rest


class LocalVersionsBackend:
    """A versioned runner in this process (`init_local()`): one pool, resolution without a TTL
    wait for exact versions."""

    def __init__(self, spec: RunnerSpec, options: VersionsOptions):
        self.spec = spec
        self.pool = VersionPool(spec, options)
        self.resolver = VersionResolver(spec.models[0].store, options.model)
        self._loop_thread: _LoopThread | None = None

    async def call_async(self, name: str, args: tuple, kwargs: dict) -> Any:
        asked, kwargs = _pop_version(kwargs)
        version = await self.resolver.resolve_async(asked)
        return await self.pool.call(version, name, args, kwargs)

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        if self._loop_thread is None:
            self._loop_thread = _LoopThread()
        return self._loop_thread.run(self.call_async(name, args, kwargs))

    def remote(self, name: str, args: tuple, kwargs: dict) -> Any:
        raise InvalidArgument(f"runner {self.spec.name!r} runs in this process; .remote() needs a served runner")

    def stats(self, name: str) -> Any:
        return None

    def close(self) -> None:
        self.pool.close()
        if self._loop_thread is not None:
            self._loop_thread.stop()
            self._loop_thread = None

    def __getstate__(self) -> dict[str, Any]:
        raise InvalidArgument("a runner initialised with init_local() stays in its process")


class VersionsReplica:
    """Hosts a `VersionPool` in a Serve replica and reports the versions it holds to Serve's router."""

    def __init__(self, spec: RunnerSpec, options: VersionsOptions, num_cpus: float):
        limit_threads(num_cpus)
        self.pool = VersionPool(spec, options, on_change=_report_versions, metrics=VersionMetrics.in_replica())
        freeze_startup_heap()

    async def call(self, method: str, version: str, *args: Any, **kwargs: Any) -> Any:
        if method not in self.pool.spec.methods:
            raise InvalidArgument(
                f"runner {self.pool.spec.name!r} has {sorted(self.pool.spec.methods)}, not {method!r}"
            )
        return for_the_wire(await self.pool.call(version, method, args, kwargs))

    def stats(self) -> dict[str, Any]:
        return self.pool.stats()


LOAD_S_BOUNDARIES = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300]
_TAG_KEYS = ("deployment", "application")
_ray_metrics: dict[str, Any] = {}  # one metric object per name and process


class VersionMetrics:
    """Ray metrics of a replica's versions: loads, evictions, load time (s), versions held, and
    requests per version (counted on the event loop, handed to Ray once a second)."""

    def __init__(self, deployment: str, application: str):
        from ray.util import metrics

        def made(kind: Any, name: str, description: str, **extra: Any) -> Any:
            if name not in _ray_metrics:
                tag_keys = _TAG_KEYS + extra.pop("more_tags", ())
                _ray_metrics[name] = kind(name, description, tag_keys=tag_keys, **extra)
            return _ray_metrics[name]

        self._tags = {"deployment": deployment, "application": application}
        self._loads = made(metrics.Counter, "raystore_version_loads_total", "Model versions loaded by a replica")
        self._evictions = made(metrics.Counter, "raystore_version_evictions_total", "Model versions evicted")
        self._load_s = made(
            metrics.Histogram, "raystore_version_load_seconds", "Time to load a version", boundaries=LOAD_S_BOUNDARIES
        )
        self._held = made(metrics.Gauge, "raystore_versions_held", "Model versions a replica holds")
        self._requests = made(
            metrics.Counter,
            "raystore_version_requests_total",
            "Requests per model version",
            more_tags=("version",),
        )
        self._buffer = MetricBuffer()
        self._request_tags: dict[str, tuple[tuple[str, str], ...]] = {}

    @classmethod
    def in_replica(cls) -> VersionMetrics | None:
        context = serve_replica_context()
        if context is None:
            return None
        try:
            return cls(context.deployment, context.app_name)
        except Exception:  # metrics are a convenience: never let them stop the model from serving
            return None

    def loaded(self, seconds: float, held: int) -> None:
        self._loads.inc(1, tags=self._tags)
        self._load_s.observe(seconds, tags=self._tags)
        self._held.set(held, tags=self._tags)

    def evicted(self, held: int) -> None:
        self._evictions.inc(1, tags=self._tags)
        self._held.set(held, tags=self._tags)

    def request(self, version: str) -> None:
        tags = self._request_tags.get(version)
        if tags is None:
            tags = self._request_tags[version] = (*self._tags.items(), ("version", version))
        self._buffer.inc(self._requests, tags)


def _report_versions(versions: list[str]) -> None:
    """Tell Serve's router which versions this replica holds, as `@serve.multiplexed` does."""
    from ray.serve._private.common import RequestRoutingInfo
    from ray.serve.context import _get_global_client, _get_internal_replica_context

    context = _get_internal_replica_context()
    if context is None:
        return
    _get_global_client().record_request_routing_info(
        RequestRoutingInfo(replica_id=context.replica_id, multiplexed_model_ids=list(versions))
    )


class ServedVersionsBackend(ServedBackend):
    """A versioned runner's deployment as callers reach it: the version resolved here, the request
    sent with it as Serve's multiplexed model id, so that it goes to a replica holding it."""

    def __init__(self, spec: RunnerSpec, options: VersionsOptions, target: Any):
        super().__init__(spec, {method: target for method in spec.methods})
        self.options = options
        self.resolver = VersionResolver(spec.models[0].store, options.model)
        self._by_version: dict[str, Any] = {}

    def remote(self, name: str, args: tuple, kwargs: dict) -> Any:
        asked, kwargs = _pop_version(kwargs)
        version = self.resolver.resolve(asked)
        return self._send(name, version, args, kwargs)

    def _send(self, name: str, version: str, args: tuple, kwargs: dict) -> Any:
        handle = self._by_version.get(version)
        if handle is None:
            handle = self._by_version[version] = self._handle(name).options(multiplexed_model_id=version)
        return handle.call.remote(name, version, *for_the_wire(args), **for_the_wire(kwargs))

    async def call_async(self, name: str, args: tuple, kwargs: dict) -> Any:
        asked, kwargs = _pop_version(kwargs)
        version = await self.resolver.resolve_async(asked)
        try:
            return await self._send(name, version, args, kwargs)
        except Exception as exc:
            from raystore._private.runner.served import _replica_lost

            if not _replica_lost(exc):
                raise
            self._log_retry(name, exc)
        await asyncio.sleep(0.05)
        return await self._send(name, version, args, kwargs)

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        return self.remote(name, args, kwargs).result()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        options = state.pop("options")
        self.__dict__.update(state)
        self.options = options
        self.resolver = VersionResolver(self.spec.models[0].store, options.model)
        self._by_version = {}


class VersionedRunner(Runner):
    """A runner for every version of one model (`raystore.models.runner_for`). Its methods take
    `version=` (an exact version, a unique prefix, an alias, `latest`; none means `latest`, looked
    up again every few seconds, so a version saved while serving is served)."""

    versions: VersionsOptions

    @classmethod
    def for_model(cls, model: str, options: VersionsOptions, **runner_options: Any) -> VersionedRunner:
        template = Model.of(default_store().get(Tag(model)))  # latest: its signatures are the runner's
        if runner_options.get("embedded"):
            raise InvalidArgument("a runner of many versions runs in a deployment of its own; embedded=False")
        runner_options.setdefault("name", template.tag.name.replace(".", "-"))
        plain = template.to_runner(colocate=True, **runner_options)
        runner = cls._from_spec(plain.spec, None)
        runner.versions = options
        return runner

    def init_local(self) -> Runner:
        self._backend = LocalVersionsBackend(self.spec, self.versions)
        return self

    def destroy_local(self) -> None:
        if isinstance(self._backend, LocalVersionsBackend):
            self._backend.close()
        self._backend = None

    def bind(self) -> Runner:
        from ray import serve

        (methods,) = [tuple(self.spec.methods)]
        resources = self.spec.resources.resolve(
            gpu_capable=self.spec.runnable_class.gpu_capable(), cluster_gpus=cluster_gpus()
        )
        options = deployment_options(self.spec, methods, resources.ray_actor_options())
        app = serve.deployment(VersionsReplica).options(**options).bind(self.spec, self.versions, resources.num_cpus)
        bound = VersionedRunner._from_spec(self.spec, ServedVersionsBackend(self.spec, self.versions, app))
        bound.versions = self.versions
        return bound

    def __getstate__(self) -> dict[str, Any]:
        backend: Backend | None = self._backend
        if isinstance(backend, LocalVersionsBackend):
            backend = None
        return {"spec": self.spec, "backend": backend, "versions": self.versions}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._start(state["spec"], state["backend"])
        self.versions = state["versions"]
