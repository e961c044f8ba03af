"""Many versions of one model behind one runner: every call names a version (an exact one, an
alias, `latest` or none), and a replica holds up to `max_models_per_replica` of them.

- `VersionResolver`: a tag's version part -> the exact version, in the caller; `latest` and
  aliases move, so what they mean is looked up again after `RESOLVE_TTL_S`.
- `VersionPool`: the versions one process holds, each a `LocalBackend` with its own batch queues
  (batches never mix versions). A version loads on first use, once however many requests ask at
  the same moment; when the pool is full, the least recently asked-for version is evicted, once
  its requests in flight are answered (a load waits rather than break a request).
- `VersionsReplica`: the Serve deployment hosting a pool. It reports which versions it holds
  (Serve's model multiplexing) to the deployment's own request router (`version_router.py`),
  which sends a version's requests where it is loaded.
- `VersionedRunner`: the `Runner` users hold (`raystore.models.runner_for(NAME)`);
  `await runner.predict.async_run(x, version="prod")`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import itertools
import logging
import os
import sys
import time
from collections import Counter, deque
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

DEFAULT_MODELS_PER_REPLICA = 4
RESOLVE_TTL_S = 2.0  # how long what `latest` or an alias means is trusted before it is looked up again
VERSIONED_MAX_ONGOING_REQUESTS = 256
VERSION_KWARG = "version"


@dataclasses.dataclass(frozen=True)
class VersionsOptions:
    model: str  # the store name whose versions the runner serves
    max_models_per_replica: int = DEFAULT_MODELS_PER_REPLICA
    gpu_memory_fraction: float | None = None  # evict idle versions while the GPU holds more than this

    def __post_init__(self) -> None:
        limit = self.max_models_per_replica
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidArgument(f"max_models_per_replica must be a positive int, got {limit!r}")
        fraction = self.gpu_memory_fraction
        if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
            raise InvalidArgument(f"gpu_memory_fraction must be in (0, 1], got {fraction!r}")


class VersionResolver:
    """A call's version (None, `latest`, an alias, a prefix, an exact version) -> the exact version.

    An answer is trusted for `ttl_s`; after that the next call gets it at once while one lookup
    refreshes it (many concurrent calls never each read the store), and an exact version is
    checked again too, so that a deleted one stops being sent."""

    def __init__(self, store: ModelStore, model: str, ttl_s: float = RESOLVE_TTL_S):
        self.store = store
        self.model = model
        self.ttl_s = ttl_s
        self._known: dict[str, tuple[float, str]] = {}  # asked -> (when looked up, exact version)
        self._refreshing: dict[str, asyncio.Future] = {}

    def _lookup(self, key: str) -> str:
        exact = self.store.resolve(Tag(self.model, key)).version
        self._known[key] = (time.monotonic(), exact)
        return exact

    @staticmethod
    def _key(asked: str | None) -> str:
        if asked is not None and not isinstance(asked, str):
            raise InvalidArgument(f"version must be a string (a version, an alias or 'latest'), got {asked!r}")
        return asked or LATEST

    def resolve(self, asked: str | None) -> str:
        key = self._key(asked)
        hit = self._known.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        return self._lookup(key)

    async def resolve_async(self, asked: str | None) -> str:
        key = self._key(asked)
        hit = self._known.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
            return hit[1]
        pending = self._refreshing.get(key)
        if pending is None:
            pending = self._refreshing[key] = asyncio.ensure_future(asyncio.to_thread(self._lookup, key))
            pending.add_done_callback(lambda _: self._refreshing.pop(key, None))
        if hit is not None:  # stale: answer with it while the one lookup runs
            pending.add_done_callback(_ignore_failure)
            return hit[1]
        return await asyncio.shield(pending)


def _log_failure(future: asyncio.Future) -> None:
    if not future.cancelled() and future.exception() is not None:
        logger.error("evicting a version failed", exc_info=future.exception())


def _ignore_failure(future: asyncio.Future) -> None:
    if not future.cancelled():
        future.exception()  # read, so that a failed background lookup is not logged as never retrieved


@dataclasses.dataclass
class _Held:
    backend: LocalBackend
    in_flight: int = 0


class VersionPool:
    """The versions of one model this process holds (see the module's docstring). Runs on one
    event loop."""

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
        self.held: dict[str, _Held] = {}
        # when each version was last asked for, in arrival order (not when it was served, which
        # for a version being loaded comes later): the order the router keeps too
        self._asked: dict[str, int] = {}
        self._asks = itertools.count(1)
        self._loading: dict[str, asyncio.Future] = {}
        self._waiting: Counter[str] = Counter()  # callers waiting for a version's load: it is theirs once loaded
        self._draining: set[str] = set()  # chosen for eviction: no new requests, evicted once idle
        self._reserved = 0  # room taken by loads in progress
        self._evictions: set[asyncio.Future] = set()  # evictions of drained versions, running
        self._room: asyncio.Event | None = None  # set, and replaced, whenever room may have changed
        self.loads = 0
        self.evictions = 0
        self.load_seconds = 0.0
        self.requests: Counter[str] = Counter()
        self.cold_seconds: deque[float] = deque(maxlen=10_000)  # latencies of calls that waited for a load

    async def call(self, version: str, method: str, args: tuple, kwargs: dict) -> Any:
        started = time.perf_counter()
        self._asked[version] = next(self._asks)
        held, waited = await self._acquire(version)
        self.requests[version] += 1
        if self.metrics is not None:
            self.metrics.request(version)
        try:
            return await held.backend.call_async(method, args, kwargs)
        finally:
            held.in_flight -= 1
            if held.in_flight == 0:
                if version in self._draining and self.held.get(version) is held:
                    self._evict_soon(version)  # its last request is answered: it goes now
                self._room_changed()
            if waited:
                self.cold_seconds.append(time.perf_counter() - started)

    async def _acquire(self, version: str) -> tuple[_Held, bool]:
        """The held version, with one more request in flight; and whether this call waited for a load."""
        waited = False
        while True:
            held = self.held.get(version)
            if held is not None and version not in self._draining:
                held.in_flight += 1  # counted before any await: it cannot be evicted from here on
                return held, waited
            waited = True
            if held is not None:  # being drained for eviction: wait until it is gone, then load it anew
                await self._wait_for_room()
                continue
            loading = self._loading.get(version)
            if loading is None:
                loading = self._loading[version] = asyncio.ensure_future(self._load(version))
                self._changed()  # routed here from now on: the next requests wait for this load
            self._waiting[version] += 1  # from here until this caller holds it, it is not evicted
            try:
                await asyncio.shield(loading)  # a load failure reaches every caller; a cancelled one leaves it be
            finally:
                self._waiting[version] -= 1
                if not self._waiting[version]:
                    del self._waiting[version]
                    self._room_changed()  # loaded for callers that all left: evictable now

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
        finally:
            self._loading.pop(version, None)
            self._changed()  # a failed load stops being advertised too
            self._room_changed()  # its reservation is released, loaded or not

    def _full(self) -> bool:
        return len(self.held) + self._reserved >= self.options.max_models_per_replica

    async def _make_room(self) -> None:
        """Evict the least recently used version until one more fits. One with requests in flight
        takes no new ones and goes once they are answered (then the next load may pick another):
        evicting a more recently used idle one instead would reload it moments later, since a busy
        version is idle only between two batches."""
        while self._full() or self._gpu_over_budget():
            if self._draining:  # a version is on its way out: room is coming
                await self._wait_for_room()
                continue
            # a version whose callers wait for it to load is theirs first
            evictable = [v for v in self.held if not self._waiting.get(v)]
            victim = min(evictable, key=self._asked.__getitem__, default=None)
            if victim is not None and self.held[victim].in_flight == 0:
                await self._evict(victim)
                continue
            if not self._full():  # over the GPU budget only: free memory now, from an idle version
                idle = [v for v in evictable if self.held[v].in_flight == 0]
                if not idle:
                    return  # nothing idle: load anyway rather than wait for memory that may never come
                await self._evict(min(idle, key=self._asked.__getitem__))
                continue
            if victim is not None:
                self._draining.add(victim)  # evicted by its last request's end (`call`)
            await self._wait_for_room()

    def _evict_soon(self, victim: str) -> None:
        eviction = asyncio.ensure_future(self._evict(victim))
        self._evictions.add(eviction)  # a task nothing refers to may be collected before it ends
        eviction.add_done_callback(self._evictions.discard)
        eviction.add_done_callback(_log_failure)

    async def _evict(self, victim: str) -> None:
        held = self.held.pop(victim, None)
        self._draining.discard(victim)
        if held is None:  # gone already (the pool closed)
            self._room_changed()
            return
        self.evictions += 1
        if self.metrics is not None:
            self.metrics.evicted(len(self.held))
        self._changed()
        try:
            await asyncio.to_thread(_close, held.backend, self.options.gpu_memory_fraction is not None)
            logger.info("runner %r evicted version %s (%d held)", self.spec.name, victim, len(self.held))
        finally:
            self._room_changed()  # its room is free even when closing it failed: a load waits for it

    async def _wait_for_room(self) -> None:
        if self._room is None:
            self._room = asyncio.Event()
        await self._room.wait()

    def _room_changed(self) -> None:
        """Wake every waiter (a request ended, a load ended, a version went): each checks again."""
        if self._room is not None:
            self._room.set()
            self._room = None

    def _gpu_over_budget(self) -> bool:
        """Whether this process holds more GPU memory than its fraction of the device (PyTorch's)."""
        fraction = self.options.gpu_memory_fraction
        if fraction is None or not self.held or "torch" not in sys.modules:
            return False
        torch = sys.modules["torch"]
        if not torch.cuda.is_available():
            return False
        total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
        return torch.cuda.memory_reserved() / total > fraction

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change([*self.held, *(v for v in self._loading if v not in self.held)])
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


def _close(backend: LocalBackend, free_gpu_cache: bool) -> None:
    backend.close()
    if free_gpu_cache and "torch" in sys.modules:
        gc.collect()  # the model's tensors go now, not at the next collection
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # and PyTorch's cache gives their memory back to the device


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
    """A versioned runner in this process (`init_local()`). Its pool runs on a loop thread of its
    own, whatever loop or thread calls: the pool's state belongs to one loop."""

    def __init__(self, spec: RunnerSpec, options: VersionsOptions):
        self.spec = spec
        self.pool = VersionPool(spec, options)
        self.resolver = VersionResolver(spec.models[0].store, options.model)
        self._loop_thread = _LoopThread()

    async def _call(self, name: str, args: tuple, kwargs: dict) -> Any:
        asked, kwargs = _pop_version(kwargs)
        version = await self.resolver.resolve_async(asked)
        return await self.pool.call(version, name, args, kwargs)

    async def call_async(self, name: str, args: tuple, kwargs: dict) -> Any:
        future = asyncio.run_coroutine_threadsafe(self._call(name, args, kwargs), self._loop_thread.loop)
        return await asyncio.wrap_future(future)

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        return self._loop_thread.run(self._call(name, args, kwargs))

    def remote(self, name: str, args: tuple, kwargs: dict) -> Any:
        raise InvalidArgument(f"runner {self.spec.name!r} runs in this process; .remote() needs a served runner")

    def stats(self, name: str) -> Any:
        return None

    def stats_view(self, name: str) -> Any:
        return None

    def close(self) -> None:
        self.pool.close()
        self._loop_thread.stop()

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
        return await self.sent_again_if_lost(name, lambda: self._send(name, version, args, kwargs))

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
        plain = template.to_runner(colocate=True, **runner_options)
        runner = cls._from_spec(plain.spec, None)
        runner.versions = options
        return runner

    def init_local(self) -> Runner:
        self._backend = LocalVersionsBackend(self.spec, self.versions)
        return self

    async def resolve_version(self, asked: str | None) -> str:
        """The exact version a call with `version=asked` gets now (NotFound when there is none)."""
        backend = self._running_backend()
        if isinstance(backend, ServedVersionsBackend):
            return await backend.resolver.resolve_async(asked)
        return await asyncio.to_thread(backend.resolver.resolve, asked)  # a local pool's resolver lives on its own loop

    def stored_versions(self) -> list[str]:
        """Every version of the model in its store, newest first (reads the store)."""
        return [m.tag.version for m in self.spec.models[0].store.list(self.versions.model)]

    def destroy_local(self) -> None:
        if isinstance(self._backend, LocalVersionsBackend):
            self._backend.close()
        self._backend = None

    def bind(self) -> Runner:
        from ray import serve
        from ray.serve.config import RequestRouterConfig

        from raystore._private.runner.version_router import VersionsRouter

        methods = tuple(self.spec.methods)  # all in one deployment
        resources = self.spec.resources.resolve(
            gpu_capable=self.spec.runnable_class.gpu_capable(), cluster_gpus=cluster_gpus()
        )
        options = deployment_options(self.spec, methods, resources.ray_actor_options())
        # Refusing requests is not how a version spreads here (the router spreads a version whose
        # replicas each have a full batch in flight): let the batch queues absorb bursts.
        options["max_ongoing_requests"] = max(options["max_ongoing_requests"], VERSIONED_MAX_ONGOING_REQUESTS)
        options["request_router_config"] = RequestRouterConfig(
            request_router_class=VersionsRouter,
            request_router_kwargs={
                "max_models_per_replica": self.versions.max_models_per_replica,
                "spread_at": max(m.batch.max_batch_size for m in self.spec.methods.values()),
            },
        )
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


def runner_for(
    model: str,
    *,
    max_models_per_replica: int = DEFAULT_MODELS_PER_REPLICA,
    gpu_memory_fraction: float | None = None,
    **runner_options: Any,
) -> VersionedRunner:
    """A runner for every version of model `model` (its store name), one deployment for all of
    them: each call names its version, `await runner.predict.async_run(x, version="prod")` (an
    exact version, a unique prefix, an alias or `latest`; none means `latest`, looked up again
    every few seconds). A replica loads a version on first use and holds at most
    `max_models_per_replica`, evicting the least recently used one once its requests in flight
    are answered (and, with `gpu_memory_fraction`, idle ones while its GPU holds more than that
    fraction). Requests go to a replica that holds their version; a version whose replicas each
    have a full batch (`max_batch_size`) in flight spreads to another. The methods, batching and resources are those of the
    latest version, with `runner_options` as `to_runner` takes them (name, max_batch_size,
    max_latency_ms, method_configs, resources, num_replicas, autoscaling)."""
    options = VersionsOptions(Tag.from_str(model).name, max_models_per_replica, gpu_memory_fraction)
    return VersionedRunner.for_model(options.model, options, **runner_options)
