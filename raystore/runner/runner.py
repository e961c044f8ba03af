"""`Runner` and `RunnerMethod`: how a Runnable runs in this process (local or embedded) or as
Ray Serve deployments reached through handles (served)."""

from __future__ import annotations

import asyncio
import copy
import functools
import inspect
import re
import threading
import time
from typing import Any, Callable, Coroutine, Mapping

from raystore.batching import BatchedFunction
from raystore.batching.config import BatchConfig
from raystore.batching.dispatcher import RunLater
from raystore.exceptions import InvalidArgument, RaystoreError
from raystore.runner.resources import Resources, parse_resources
from raystore.runner.runnable import Runnable, RunnableMethodConfig
from raystore.runner.transport import for_the_wire

DEFAULT_MAX_BATCH_SIZE = 100
DEFAULT_MAX_LATENCY_MS = 10_000
_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")


class RunnerNotReady(RaystoreError):
    """The runner was called before `init_local()` or before being served."""


class RunnerMethod:
    """One method of a runner: `run` (blocking), `async_run`, and `remote` (served: a response to
    await later or pass to another deployment without materialising it)."""

    def __init__(self, runner: Runner, name: str, config: RunnableMethodConfig, *, max_batch_size: int,
                 max_latency_ms: float, resources: Resources):
        self.runner, self.name, self.config = runner, name, config
        self.max_batch_size, self.max_latency_ms, self.resources = max_batch_size, max_latency_ms, resources

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.runner._run_sync(self.name, args, kwargs)

    def async_run(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """A coroutine to await: `await runner.predict.async_run(x)`."""
        return self.runner._run_async(self.name, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.runner._remote(self.name, args, kwargs)

    def __repr__(self) -> str:
        return f"RunnerMethod({self.runner.name}.{self.name}, batchable={self.config.batchable})"


class Runner:
    """Runs a `Runnable`'s methods: locally after `init_local()`, embedded in the calling replica,
    or as one Serve deployment per method (all in one with `colocate=True`)."""

    def __init__(
        self,
        runnable_class: type[Runnable],
        *,
        name: str | None = None,
        runnable_init_params: Mapping[str, Any] | None = None,
        models: list[Any] | None = None,
        max_batch_size: int | None = None,
        max_latency_ms: float | None = None,
        method_configs: Mapping[str, Mapping[str, Any]] | None = None,
        resources: Mapping[str, Any] | str | None = None,
        num_replicas: int = 1,
        autoscaling: Mapping[str, Any] | None = None,
        colocate: bool = False,
        embedded: bool = False,
    ):
        if not (isinstance(runnable_class, type) and issubclass(runnable_class, Runnable)):
            raise InvalidArgument(f"a Runner needs a raystore.Runnable subclass, got {runnable_class!r}")
        if not runnable_class.methods:
            raise InvalidArgument(f"{runnable_class.__name__} exposes no methods; mark them with @raystore.Runnable.method")
        self.name = _runner_name(name or runnable_class.__name__.lower())
        self.runnable_class = runnable_class
        self.runnable_init_params = dict(runnable_init_params or {})
        self.models = list(models or [])
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise InvalidArgument(f"num_replicas must be a positive int, got {num_replicas!r}")
        if autoscaling is not None and not isinstance(autoscaling, Mapping):
            raise InvalidArgument(f"autoscaling must be a dict of Serve autoscaling_config fields, got {autoscaling!r}")
        self.num_replicas, self.autoscaling = num_replicas, dict(autoscaling) if autoscaling else None
        self.colocate, self.embedded = bool(colocate), bool(embedded)
        gpu_capable = runnable_class.gpu_capable()
        base_resources = parse_resources(resources, gpu_capable=gpu_capable)
        method_configs = dict(method_configs or {})
        unknown = set(method_configs) - set(runnable_class.methods)
        if unknown:
            raise InvalidArgument(f"method_configs names {sorted(unknown)}; {self.name} has {sorted(runnable_class.methods)}")
        self.methods: dict[str, RunnerMethod] = {}
        for method, config in runnable_class.methods.items():
            overrides = dict(method_configs.get(method) or {})
            bad = set(overrides) - {"max_batch_size", "max_latency_ms", "resources"}
            if bad:
                raise InvalidArgument(f"method_configs[{method!r}]: unknown keys {sorted(bad)}; allowed: max_batch_size, max_latency_ms, resources")
            if colocate and "resources" in overrides:
                raise InvalidArgument("colocate=True runs every method in one deployment: give resources for the runner, not per method")
            self.methods[method] = RunnerMethod(
                self, method, config,
                max_batch_size=_positive_int(overrides.get("max_batch_size", _default(max_batch_size, DEFAULT_MAX_BATCH_SIZE)), "max_batch_size"),
                max_latency_ms=_positive(overrides.get("max_latency_ms", _default(max_latency_ms, DEFAULT_MAX_LATENCY_MS)), "max_latency_ms"),
                resources=parse_resources(overrides["resources"], gpu_capable=gpu_capable, where=f"method_configs[{method!r}].resources")
                if "resources" in overrides else base_resources,
            )
        self.resources = base_resources
        self._instance: Runnable | None = None
        self._batched: dict[str, BatchedFunction] = {}
        self._local: dict[str, tuple[Any, bool]] = {}
        self._handles: dict[str, Any] = {}  # method -> DeploymentHandle, when served
        self._bound: dict[str, Any] = {}  # method -> Serve Application, between bind() and deploy
        self._init_lock = threading.Lock()
        self._loop_thread: _LoopThread | None = None

    # ---- attribute access: runner.predict ------------------------------------------------------

    def __getattr__(self, item: str) -> RunnerMethod:
        methods = self.__dict__.get("methods", {})
        if item in methods:
            return methods[item]
        raise AttributeError(f"runner {self.__dict__.get('name', '?')!r} has no method {item!r}; it has {sorted(methods)}")

    def __repr__(self) -> str:
        return f"Runner(name={self.name!r}, methods={sorted(self.methods)})"

    @property
    def _default_method(self) -> RunnerMethod:
        if len(self.methods) == 1:
            return next(iter(self.methods.values()))
        if "__call__" in self.methods:
            return self.methods["__call__"]
        raise InvalidArgument(
            f"runner {self.name!r} has several methods {sorted(self.methods)}; call one, e.g. runner.{sorted(self.methods)[0]}.run(...)"
        )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self._default_method.run(*args, **kwargs)

    def async_run(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return self._default_method.async_run(*args, **kwargs)

    # ---- in this process -----------------------------------------------------------------------

    def init_local(self) -> Runner:
        """Instantiate the runnable here; calls then run in this process, batched like served ones."""
        with self._init_lock:
            if self._instance is None:
                instance = self.runnable_class(**self.runnable_init_params)
                batched = {
                    name: _batched_call(instance, method)
                    for name, method in self.methods.items()
                    if method.config.batchable
                }
                # (callable, is_async) per method, resolved once: this is every local call's path
                local = {}
                for name in self.methods:
                    target = batched.get(name) or getattr(instance, name)
                    local[name] = (target, name in batched or inspect.iscoroutinefunction(target))
                self._batched, self._local = batched, local
                self._instance = instance  # last: callers take the local path once this is set
        return self

    def destroy_local(self) -> None:
        self._instance, self._batched, self._local = None, {}, {}
        if self._loop_thread is not None:
            self._loop_thread.stop()
            self._loop_thread = None

    @property
    def is_local(self) -> bool:
        return self._instance is not None

    def _call_local(self, name: str, args: tuple, kwargs: dict) -> Coroutine[Any, Any, Any]:
        """The coroutine of a call in this process. Plain functions returning the callee's own
        coroutine: every layer of `async def` here would be entered again each time the call
        resumes, which a small model served in the ingress pays for on every request."""
        call, is_async = self._local[name]
        if is_async:
            return call(*args, **kwargs)
        return _call_blocking(call, args, kwargs)

    # ---- dispatch by mode ----------------------------------------------------------------------

    def _ensure_ready(self) -> None:
        if self._instance is None and not self._handles:
            if self.embedded and (self._bound or _in_serve_replica()):
                self.init_local()  # embedded: load the model in the calling replica on first use
                return
            raise RunnerNotReady(
                f"runner {self.name!r} is not running: call runner.init_local() to run it in this process, "
                "or serve it (raystore.Service / runner.bind())"
            )

    def _run_async(self, name: str, args: tuple, kwargs: dict) -> Coroutine[Any, Any, Any]:
        if self._instance is not None:  # the hot path first: local and embedded calls
            return self._call_local(name, args, kwargs)
        return self._run_async_slow(name, args, kwargs)

    async def _run_async_slow(self, name: str, args: tuple, kwargs: dict) -> Any:
        """A call before the runner is known to be local: load an embedded model, or go remote."""
        self._ensure_ready()
        if self._instance is not None:
            return await self._call_local(name, args, kwargs)
        return await self._remote(name, args, kwargs)

    def _run_sync(self, name: str, args: tuple, kwargs: dict) -> Any:
        self._ensure_ready()
        if self._instance is not None:
            call, is_async = self._local[name]
            if not is_async:
                return call(*args, **kwargs)
            if self._loop_thread is None:
                self._loop_thread = _LoopThread()
            return self._loop_thread.run(self._call_local(name, args, kwargs))
        return self._remote(name, args, kwargs).result()

    def _remote(self, name: str, args: tuple, kwargs: dict) -> Any:
        handle = self._handles.get(name)
        if handle is None:
            raise RunnerNotReady(f"runner {self.name!r} is not served here; .remote() needs a served runner")
        return handle.call.remote(name, *for_the_wire(args), **for_the_wire(kwargs))

    # ---- Serve ---------------------------------------------------------------------------------

    def bind(self) -> Runner:
        """A copy of this runner that Serve turns into handles when passed to `Deployment.bind(...)`:

            app = MyIngress.bind(runner.bind())
            # in MyIngress.__init__(self, runner): `await runner.predict.async_run(x)`
        """
        from raystore.runner.deployment import runner_applications

        bound = self._spec_copy()
        if not self.embedded:
            bound._bound = runner_applications(self)
        else:
            bound._bound = {"embedded": True}
        return bound

    def _spec_copy(self) -> Runner:
        """This runner's configuration without any live state (what deployments receive)."""
        clone = copy.copy(self)
        clone.__dict__.update(_process_state(), _handles={}, _bound={}, _init_lock=threading.Lock(), methods={})
        clone.methods = {
            name: RunnerMethod(clone, name, m.config, max_batch_size=m.max_batch_size,
                               max_latency_ms=m.max_latency_ms, resources=m.resources)
            for name, m in self.methods.items()
        }
        return clone

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state.update(_process_state(), _init_lock=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._init_lock = threading.Lock()
        # Serve replaces the bound applications by handles when it builds the calling deployment.
        for method, value in list(self._bound.items()):
            if type(value).__name__ == "DeploymentHandle":
                self._handles[method] = value
                del self._bound[method]


def _process_state() -> dict[str, Any]:
    """A runner's live state that never leaves its process, reset: the loaded model, its batch
    queues and local call table, the thread running its event loop for synchronous callers."""
    return {"_instance": None, "_batched": {}, "_local": {}, "_loop_thread": None}


async def _call_blocking(call: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    return call(*args, **kwargs)


def _batched_call(instance: Runnable, method: RunnerMethod) -> BatchedFunction:
    """The model method behind a batch queue."""
    target = getattr(instance, method.name)
    if inspect.iscoroutinefunction(target):
        @functools.wraps(target)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await target(*args, **kwargs)
        run_now = None
    else:
        blocking = _BlockingCall(target)
        run_now = blocking.run_now

        @functools.wraps(target)
        async def call(*args: Any, **kwargs: Any) -> Any:
            return await blocking(*args, **kwargs)
    config = BatchConfig(
        max_batch_size=method.max_batch_size,
        max_latency_ms=method.max_latency_ms,
        batch_dim=method.config.batch_dim,
    )
    return BatchedFunction(call, config, run_now=run_now)


# A blocking batch that usually takes less than this runs on the event loop itself.
INLINE_BELOW_S = 0.0005


class _BlockingCall:
    """Runs a blocking model method for the batch queue.

    The queue first offers each batch to `run_now`. A batch that takes well under a millisecond runs
    there, on the event loop: the hop to a thread and back costs about as much as the batch itself,
    and two threads contending for the GIL slow the replica's HTTP work down. A slower batch is
    declined and awaited through `__call__`, on a worker thread, so the loop keeps taking requests
    (and filling the next batch) while the model computes. The choice follows a moving average of
    batch times, so a model that slows down (bigger batches, a busy GPU) moves back to the thread.
    """

    def __init__(self, target: Any):
        self.target = target
        self.recent_s: float | None = None  # moving average of batch times; None until one ran

    def run_now(self, *args: Any, **kwargs: Any) -> Any:
        """Run a fast batch at once; decline a slow one (or the first, while nothing is known)."""
        if self.recent_s is not None and self.recent_s < INLINE_BELOW_S:
            return self._timed(args, kwargs)
        raise RunLater

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A batch `run_now` declined: on a worker thread."""
        return await asyncio.to_thread(self._timed, args, kwargs)

    def _timed(self, args: tuple, kwargs: dict) -> Any:
        start = time.perf_counter()
        try:
            return self.target(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            self.recent_s = elapsed if self.recent_s is None else self.recent_s + 0.2 * (elapsed - self.recent_s)


class _LoopThread:
    """An event loop on a daemon thread, for `run()` from synchronous code in local mode."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="raystore-runner-loop", daemon=True)
        self.thread.start()

    def run(self, coroutine: Any) -> Any:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop:
            raise RuntimeError("run() called from the runner's own loop; use await async_run()")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)


def _in_serve_replica() -> bool:
    import sys

    if "ray" not in sys.modules:
        return False
    try:
        from ray import serve

        serve.get_replica_context()
        return True
    except Exception:
        return False


def _runner_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise InvalidArgument(
            f"runner name {name!r} must be lowercase letters, digits, '-' and '_', starting and ending "
            "with a letter or digit, at most 63 characters (it names Serve deployments)"
        )
    return name


def _default(value: Any, default: Any) -> Any:
    return default if value is None else value


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgument(f"{what} must be a positive int, got {value!r}")
    return value


def _positive(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise InvalidArgument(f"{what} must be a positive number, got {value!r}")
    return float(value)
