"""Running a runner in this process: `LocalBackend` (after `init_local()`, and inside a runner's
own Serve replica) and `EmbeddedBackend` (loaded in the replica that calls it, on first use).

Both instantiate the runnable here and put each batchable method behind a `raystore.batch`
queue, so local calls batch exactly as served ones do.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

from raystore._private.batch_config import validate_max_batch_size, validate_max_latency_ms
from raystore._private.batching import BatchedFunction, BatchStats, StreamingBatchedFunction
from raystore._private.batching.dispatcher import RunLater
from raystore._private.runner.runnable import Runnable
from raystore._private.runner.spec import MethodSpec, RunnerSpec
from raystore.exceptions import InvalidArgument, RunnerNotReady

BATCH_SETTINGS = ("max_batch_size", "max_latency_ms")  # what `reconfigure` changes
REPLICA_ID = f"{socket.gethostname()}:{os.getpid()}"  # this process among a runner's replicas
# A blocking batch that usually takes less than this runs on the event loop itself.
INLINE_BELOW_S = 0.0005


class LocalBackend:
    """The runnable instantiated in this process, with one batch queue per batchable method."""

    def __init__(self, spec: RunnerSpec, *, lazy: bool = False):
        self.spec = spec
        self.instance: Runnable | None = None
        self._batched: dict[str, BatchedFunction] = {}
        # (callable, is_async, coroutine function for call_async) per method, resolved once: this is
        # every local call's path
        self._calls: dict[str, tuple[Callable[..., Any], bool, Callable[..., Any]]] = {}
        self._streams: dict[str, Callable[..., Any]] = {}  # streaming methods: a call gives an async iterator
        self._load_lock = threading.Lock()
        self._loop_thread: _LoopThread | None = None
        if not lazy:
            self.load()

    @property
    def loaded(self) -> bool:
        return self.instance is not None

    def load(self) -> None:
        """Instantiate the runnable (once; concurrent callers wait for the first)."""
        with self._load_lock:
            if self.instance is not None:
                return
            instance = self.spec.runnable_class(**self.spec.runnable_init_params)
            batched = {
                name: _batched_call(instance, method) for name, method in self.spec.methods.items() if method.batchable
            }
            calls, streams = {}, {}
            for name, method in self.spec.methods.items():
                target = batched.get(name) or getattr(instance, name)
                if method.streams:
                    streams[name] = target
                    target = _NotAStream(self.spec.name, name, streams=True)
                    calls[name] = (target, False, target)
                    continue
                is_async = name in batched or inspect.iscoroutinefunction(target)
                calls[name] = (target, is_async, target if is_async else _UnbatchedBlockingCall(target))
            self._batched, self._calls, self._streams = batched, calls, streams
            self.instance = instance  # last: callers take the loaded path once this is set

    def _call_of(self, name: str) -> tuple[Callable[..., Any], bool, Callable[..., Any]]:
        entry = self._calls.get(name)
        if entry is None:
            self.load()
            entry = self._calls[name]
        return entry

    # ---- the backend interface -------------------------------------------------------------------

    def call_async(self, name: str, args: tuple, kwargs: dict) -> Coroutine[Any, Any, Any]:
        """The coroutine of one call. A plain function returning the callee's own coroutine: every
        layer of `async def` here would be entered again each time the call resumes, which a small
        model served in the ingress pays for on every request."""
        return (self._calls.get(name) or self._call_of(name))[2](*args, **kwargs)

    def stream(self, name: str, args: tuple, kwargs: dict) -> AsyncIterator[Any]:
        """The async iterator of one call of a streaming method (an async generator)."""
        if self.instance is None:
            self.load()
        target = self._streams.get(name)
        if target is None:
            _NotAStream(self.spec.name, name, streams=False)()
        return target(*args, **kwargs)

    def call(self, name: str, args: tuple, kwargs: dict) -> Any:
        """One call from synchronous code; batched methods run on this backend's own event loop."""
        call, is_async, _ = self._call_of(name)
        if not is_async:
            return call(*args, **kwargs)
        if self._loop_thread is None:
            self._loop_thread = _LoopThread()
        return self._loop_thread.run(self.call_async(name, args, kwargs))

    def remote(self, name: str, args: tuple, kwargs: dict) -> Any:
        raise RunnerNotReady(f"runner {self.spec.name!r} runs in this process; .remote() needs a served runner")

    def stats(self, name: str) -> BatchStats | None:
        """What the method's batch queue has done; None for a method that is not batched."""
        batched = self._batched.get(name)
        return batched.stats if batched is not None else None

    def stats_view(self, name: str) -> dict[str, Any] | None:
        """`stats(name).as_dict()` with the queue's settings now under "settings" (they change with
        `reconfigure`, from what the spec says) and this process under "replica" (which replica
        of several answered); None for a method that is not batched."""
        batched = self._batched.get(name)
        if batched is None:
            return None
        settings = {"max_batch_size": batched.max_batch_size, "max_latency_ms": batched.max_latency_ms}
        return {**batched.stats.as_dict(), "settings": settings, "replica": REPLICA_ID}

    # ---- in a runner's own replica ---------------------------------------------------------------

    def reconfigure(self, name: str, settings: dict[str, Any]) -> None:
        """New `max_batch_size` / `max_latency_ms` for one method's queue (checked by BatchConfig)."""
        if name not in self.spec.methods:
            raise InvalidArgument(
                f"runner {self.spec.name!r} has no method {name!r}; it has {sorted(self.spec.methods)}"
            )
        if not isinstance(settings, dict):
            raise InvalidArgument(
                f"{self.spec.name}.{name}: batch settings are a mapping such as "
                f'{{"max_batch_size": 32, "max_latency_ms": 10}}, got {settings!r}'
            )
        unknown = sorted(set(settings) - set(BATCH_SETTINGS))
        if unknown:
            raise InvalidArgument(
                f"{self.spec.name}.{name}: unknown batch settings {unknown}; give {list(BATCH_SETTINGS)}"
            )
        # both checked before either is set: a refused change leaves the queue as it was
        size = validate_max_batch_size(settings["max_batch_size"]) if "max_batch_size" in settings else None
        latency = validate_max_latency_ms(settings["max_latency_ms"]) if "max_latency_ms" in settings else None
        batched = self._batched.get(name)
        if batched is None:
            return
        if size is not None:
            batched.set_max_batch_size(size)
        if latency is not None:
            batched.set_max_latency_ms(latency)

    async def check_health(self) -> None:
        """Raises when the runnable's own `check_health()` (an optional hook) says it is unwell; a
        blocking hook runs on a worker thread, so a slow one is timed out by Serve, not the loop."""
        check = getattr(self.instance, "check_health", None)
        if check is None:
            return
        if inspect.iscoroutinefunction(check):
            await check()
        else:
            await asyncio.to_thread(check)

    def close(self) -> None:
        for _, _, call in self._calls.values():
            if isinstance(call, _UnbatchedBlockingCall):
                call.close()
        self.instance, self._batched, self._calls, self._streams = None, {}, {}, {}
        if self._loop_thread is not None:
            self._loop_thread.stop()
            self._loop_thread = None

    def __getstate__(self) -> dict[str, Any]:
        # A loaded model, its queues and its threads never leave their process: a copy loads anew.
        return {"spec": self.spec}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["spec"], lazy=True)  # type: ignore[misc]


class EmbeddedBackend(LocalBackend):
    """An `embedded=True` runner in the replica that calls it: the model loads on first use (or
    when the service's ingress starts), with no hop to a deployment of its own."""

    def __init__(self, spec: RunnerSpec, *, lazy: bool = True):
        super().__init__(spec, lazy=lazy)


class _TimedCall:
    """A blocking model method and a moving average of how long its calls take, which decides
    whether the next one runs on the event loop or on a thread."""

    def __init__(self, target: Any):
        self.target = target
        self.recent_s: float | None = None  # None until one ran

    def fast(self) -> bool:
        return self.recent_s is not None and self.recent_s < INLINE_BELOW_S

    def _timed(self, args: tuple, kwargs: dict) -> Any:
        start = time.perf_counter()
        try:
            return self.target(*args, **kwargs)
        finally:
            elapsed = time.perf_counter() - start
            self.recent_s = elapsed if self.recent_s is None else self.recent_s + 0.2 * (elapsed - self.recent_s)


class _UnbatchedBlockingCall(_TimedCall):
    """A blocking method that is not batched, called from the event loop. A fast call runs there
    (a thread hop would cost as much); a slow one (`generate`, a big model) runs on this method's
    own worker thread, so that the loop keeps answering, Serve's health checks included. The thread
    takes one call at a time, as the loop did, so a model that is not thread-safe mostly stays so
    (a fast call may still run inline beside a slow one while the average moves)."""

    def __init__(self, target: Any):
        super().__init__(target)
        self._thread: concurrent.futures.ThreadPoolExecutor | None = None

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.fast():
            return self._timed(args, kwargs)
        if self._thread is None:
            self._thread = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="raystore-call")
        return await asyncio.get_running_loop().run_in_executor(self._thread, self._timed, args, kwargs)

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=False)


class _NotAStream:
    """What calling a method the wrong way gives: a clear error saying the right way."""

    def __init__(self, runner: str, method: str, *, streams: bool):
        self.runner, self.method, self.streams = runner, method, streams

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.streams:
            raise InvalidArgument(
                f"runner {self.runner!r}: {self.method} streams (it is an async generator); "
                f"iterate over it: `async for piece in runner.{self.method}.async_stream(...)`"
            )
        raise InvalidArgument(
            f"runner {self.runner!r}: {self.method} does not stream (it is not an async generator); "
            f"call it with run() or async_run()"
        )


def _batched_call(instance: Runnable, method: MethodSpec) -> BatchedFunction:
    """The model method behind a batch queue."""
    target = getattr(instance, method.name)
    if method.streams:
        # the bound generator itself: the queue sends it each step's BatchUpdate (continuous)
        return StreamingBatchedFunction(target, method.batch)
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

    return BatchedFunction(call, method.batch, run_now=run_now)


class _BlockingCall(_TimedCall):
    """Runs a blocking model method for the batch queue.

    The queue first offers each batch to `run_now`. A batch that takes well under a millisecond runs
    there, on the event loop: the hop to a thread and back costs about as much as the batch itself,
    and two threads contending for the GIL slow the replica's HTTP work down. A slower batch is
    declined and awaited through `__call__`, on a worker thread, so the loop keeps taking requests
    (and filling the next batch) while the model computes. The choice follows a moving average of
    batch times, so a model that slows down (bigger batches, a busy GPU) moves back to the thread.
    """

    def run_now(self, *args: Any, **kwargs: Any) -> Any:
        """Run a fast batch at once; decline a slow one (or the first, while nothing is known)."""
        if self.fast():
            return self._timed(args, kwargs)
        raise RunLater

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """A batch `run_now` declined: on a worker thread."""
        return await asyncio.to_thread(self._timed, args, kwargs)


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
            coroutine.close()
            raise InvalidArgument("run() called from the runner's own loop; use await async_run()")
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
