"""`raystore.batch`: the decorator, and the batched functions and methods it makes."""

from __future__ import annotations

import asyncio
import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from raystore._private.batch_config import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_LATENCY_MS, BatchConfig
from raystore._private.batching.dispatcher import Arguments, Dispatcher
from raystore._private.batching.serve_metrics import serve_replica_metrics
from raystore._private.batching.stats import BatchStats
from raystore.exceptions import InvalidArgument


def batch(
    func: Callable[..., Any] | None = None,
    /,
    *,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
    batch_dim: int | tuple[int, int] = 0,
    max_concurrent_batches: int = 1,
    batch_size_fn: Callable[[list], int] | None = None,
    continuous: bool = False,
) -> Any:
    """Batch the calls of an `async` function or method along a batch dimension.

    The decorated function takes a whole batch: each argument concatenated along the input batch
    dim. Callers call it with one request's arguments and get back exactly their rows of the
    result, cut along the output batch dim::

        @serve.deployment(max_ongoing_requests=256)
        class Classifier:
            @raystore.batch(max_batch_size=64, max_latency_ms=100, batch_dim=(1, 0))
            async def predict(self, x: np.ndarray) -> np.ndarray:
                return self.model(x)          # x: (features, rows) -> (rows, classes)

            async def __call__(self, x):
                return await self.predict(x)  # x: (features, k) -> (k, classes)

    Arguments:
        max_batch_size: the most rows (not requests) in one batch, 100 by default. A request with
            more rows is cut across batches and its results put back together.
        max_latency_ms: the latency budget of a request, queue wait plus execution; 10 000 by
            default. The dispatcher waits for more rows only while this budget allows, and under
            overload it rejects requests it cannot serve in time with `ServiceUnavailable`
            (only once it has timed enough batches to trust its estimate of the model's speed).
        batch_dim: the dimension to batch along; an int for both sides or `(input_dim, output_dim)`.
            numpy arrays and torch tensors batch along any dim, lists and pandas objects along 0,
            tuples and dicts of them member by member (see `raystore._private.batching.containers`).
        max_concurrent_batches: how many batches may run at once (more than 1 only helps when the
            function awaits something that runs in parallel).
        batch_size_fn: a batch's size in units of work (tokens, pixels, graph nodes) rather than
            rows, as `@serve.batch` takes it: called with a list of the batch's requests' first
            arguments, it returns an int, and `max_batch_size` (and the latency model) counts
            those units. A request is then never cut across batches; one larger than
            `max_batch_size` alone, or whose size cannot be computed, fails by itself.
        continuous: for an async generator (a streaming batch function): let queued requests
            join a running batch between its steps, and finished ones leave (continuous
            batching); the generator receives a `BatchUpdate` from each `yield`. Without it a
            streaming batch keeps its callers until it ends (static batches, as `@serve.batch`).

    An **async generator** is batched step by step: each `yield` gives one result for the whole
    batch, and each caller iterates over its own rows of every step::

        @raystore.batch(max_batch_size=32)
        async def generate(self, prompts: list[str]):
            for _ in range(16):
                yield self.model.next_tokens(prompts)     # one token per prompt

        async for piece in self.generate(["Once upon"]):  # ["a"], ["time"], ...

    A caller's stream ends with the generator, or when its rows of a step are `StopIteration`;
    a caller may stop early without disturbing the others. See
    `raystore._private.batching.streaming` for continuous batching.

    Every keyword and positional argument is batched along the same dim, and all must have the
    same row count. Requests are served first in, first out; consecutive requests share a batch
    when their values have the same types, dtypes and non-batch shapes. Used bare (`@batch`), the
    defaults apply. One queue exists per object and event
    loop, so it works the same in a Ray Serve replica, a local runner or a plain `asyncio.run`.
    Inside a Serve replica, set `max_ongoing_requests` well above `max_batch_size` (in requests),
    or Serve itself caps the batches.

    Tune at runtime, e.g. from a deployment's `reconfigure`::

        def reconfigure(self, config: dict):
            self.predict.set_max_batch_size(config["max_batch_size"])
            self.predict.set_max_latency_ms(config["max_latency_ms"])

    `self.predict.stats` is a `BatchStats` record of what the queue has done.
    """
    config = BatchConfig(
        max_batch_size=max_batch_size,
        max_latency_ms=max_latency_ms,
        batch_dim=batch_dim,
        max_concurrent_batches=max_concurrent_batches,
        batch_size_fn=batch_size_fn,
        continuous=continuous,
    )

    def decorate(function: Callable[..., Any]) -> BatchedFunction:
        if is_async_generator(function):
            return StreamingBatchedFunction(function, config)
        if continuous:
            raise InvalidArgument(
                f"raystore.batch(continuous=True) is for async generators (streaming batch functions); "
                f"{getattr(function, '__qualname__', function)!r} is not one"
            )
        return BatchedFunction(function, config)

    return decorate(func) if func is not None else decorate


class _QueueState:
    """The tunable settings, the stats and the per-event-loop dispatchers of one owner (an object,
    or the function itself when it is not a method)."""

    def __init__(self, config: BatchConfig):
        self.config = config
        self.stats = BatchStats()
        self._dispatchers: dict[asyncio.AbstractEventLoop, Dispatcher] = {}

    def dispatcher(self) -> Dispatcher | None:
        """This event loop's dispatcher, if there is one yet (a queue belongs to one loop)."""
        return self._dispatchers.get(asyncio.get_running_loop())

    def new_dispatcher(
        self,
        execute: Callable[[Arguments], Any],
        name: str,
        execute_now: Callable[[Arguments], Any] | None = None,
        streaming: bool = False,
    ) -> Dispatcher:
        """Make this event loop's dispatcher."""
        loop = asyncio.get_running_loop()
        dispatcher = self._dispatchers.get(loop)
        if dispatcher is None:
            self._forget_closed_loops()
            observers: list[Any] = [self.stats]
            ray_metrics = serve_replica_metrics(name)
            if ray_metrics is not None:
                observers.append(ray_metrics)
            dispatcher = Dispatcher(
                execute, self.config, name=name, observers=observers, execute_now=execute_now, streaming=streaming
            )
            self._dispatchers[loop] = dispatcher
        return dispatcher

    def _forget_closed_loops(self) -> None:
        for loop in [loop for loop in self._dispatchers if loop.is_closed()]:
            self._dispatchers.pop(loop).close()


class BatchedFunction:
    """An `async` function or method whose calls are batched; made by `raystore.batch`.

    Accessed on an object it gives a `BatchedMethod` bound to that object, with the object's own
    queue. Called directly (a decorated plain function) it uses one queue of its own.
    """

    _streaming = False

    def __init__(self, func: Callable[..., Any], config: BatchConfig, run_now: Callable[..., Any] | None = None):
        """`run_now`, optional: a plain function with `func`'s signature that runs a batch at once
        and returns its result, or raises `RunLater` to have `func` awaited instead (the runner's
        blocking models: fast ones run without a task of their own)."""
        async_call = getattr(func, "__call__", None)  # noqa: B004 - an object with an async __call__
        if self._streaming != is_async_generator(func):
            kind = "an async generator" if self._streaming else "a coroutine function"
            raise TypeError(f"{type(self).__name__} needs {kind}, got {func!r}")
        if not (inspect.iscoroutinefunction(func) or inspect.iscoroutinefunction(async_call) or self._streaming):
            raise TypeError(
                f"raystore.batch needs an `async def` function or async generator, got {func!r}; make it async "
                f"(run blocking model code with `await asyncio.to_thread(...)` if needed)"
            )
        functools.update_wrapper(self, func)
        self._func = func
        self._run_now = run_now
        self._config = config
        self._signature = inspect.signature(func)
        self._positional = _positional_names(self._signature)
        self._name = getattr(func, "__qualname__", type(func).__qualname__)
        self._state_attribute = f"_raystore_batch_{getattr(func, '__name__', 'call')}"
        self._own_state: _QueueState | None = None

    def __set_name__(self, owner: type, name: str) -> None:
        self._state_attribute = f"_raystore_batch_{name}"

    def __get__(self, instance: Any, owner: type | None = None) -> Any:
        if instance is None:
            return self
        return (StreamingBatchedMethod if self._streaming else BatchedMethod)(self, instance)

    def __getstate__(self) -> dict[str, Any]:
        # Queues are bound to live event loops; a pickled copy starts with fresh ones.
        return {**self.__dict__, "_own_state": None, "_signature": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._signature = inspect.signature(self._func)
        self._positional = _positional_names(self._signature)

    # ---- plain function use ----------------------------------------------------------------------

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return await self._submit(self._state(None), None, args, kwargs)

    @property
    def stats(self) -> BatchStats:
        return self._state(None).stats

    @property
    def max_batch_size(self) -> int:
        return self._state(None).config.max_batch_size

    @property
    def max_latency_ms(self) -> float:
        return self._state(None).config.max_latency_ms

    def set_max_batch_size(self, max_batch_size: int) -> None:
        self._state(None).config.set_max_batch_size(max_batch_size)

    def set_max_latency_ms(self, max_latency_ms: float) -> None:
        self._state(None).config.set_max_latency_ms(max_latency_ms)

    # ---- shared -----------------------------------------------------------------------------------

    def _state(self, instance: Any) -> _QueueState:
        """The queue state of `instance` (or of the function itself when None), created lazily."""
        if instance is None:
            if self._own_state is None:
                self._own_state = _QueueState(self._config.copy())
            return self._own_state
        try:
            attributes = vars(instance)
        except TypeError:
            raise TypeError(
                f"raystore.batch keeps a queue per object in its __dict__, but {type(instance).__name__} "
                f"has none (it uses __slots__); add '__dict__' to its __slots__"
            ) from None
        state = attributes.get(self._state_attribute)
        if state is None:
            state = attributes[self._state_attribute] = _QueueState(self._config.copy())
        return state

    def _submit(self, state: _QueueState, instance: Any, args: tuple, kwargs: dict) -> Awaitable[Any]:
        """Queue one call: its arguments by name (without `self`), batched by the owner's queue.
        A plain function returning the queue's coroutine (for a streaming function, its async
        iterator): one coroutine frame less per call."""
        call_args = args if instance is None else (instance, *args)
        arguments = None
        if not kwargs and self._positional is not None:  # the common call: no need for inspect
            arguments = _bind_positional(self._positional, call_args)
        if arguments is None:
            arguments = dict(self._signature.bind(*call_args, **kwargs).arguments)
        if instance is not None:
            del arguments[next(iter(arguments))]  # `self`
        dispatcher = state.dispatcher() or state.new_dispatcher(
            self._executor(self._func, instance),
            self._name,
            None if self._run_now is None else self._executor(self._run_now, instance),
            self._streaming,
        )
        submit = dispatcher.submit_stream if self._streaming else dispatcher.submit
        if state.config.batch_size_fn is None:
            return submit(arguments)
        # what batch_size_fn sizes, as `@serve.batch` hands it over: the caller's first argument
        return submit(arguments, item=args[0] if args else next(iter(kwargs.values()), None))

    def _executor(self, func: Callable[..., Any], instance: Any) -> Callable[[Arguments], Any]:
        """What a dispatcher calls with one batch's arguments by name: `func` (the batched function,
        or its `run_now`) called with them, and with `instance` as `self` for a method. For the
        async function it returns the coroutine, which the dispatcher awaits."""
        signature = self._signature
        self_name = next(iter(signature.parameters)) if instance is not None else None

        def execute(batch_arguments: Arguments) -> Any:
            if self_name is not None:
                batch_arguments = {self_name: instance, **batch_arguments}
            call = inspect.BoundArguments(signature, batch_arguments)  # type: ignore[arg-type]
            return func(*call.args, **call.kwargs)

        return execute


def _positional_names(signature: inspect.Signature) -> tuple[tuple[str, ...], str | None] | None:
    """(required positional parameter names, the `*args` name or None), or None when binding
    needs `inspect` (defaults, keyword-only parameters)."""
    plain = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names: list[str] = []
    star = None
    for parameter in signature.parameters.values():
        if parameter.kind in plain and star is None and parameter.default is inspect.Parameter.empty:
            names.append(parameter.name)
        elif parameter.kind is inspect.Parameter.VAR_POSITIONAL:
            star = parameter.name
        elif parameter.kind is not inspect.Parameter.VAR_KEYWORD:
            return None
    return tuple(names), star


def _bind_positional(layout: tuple[tuple[str, ...], str | None], args: tuple) -> Arguments | None:
    """What `signature.bind(*args).arguments` gives, without inspect's cost; None if it does not fit."""
    names, star = layout
    if len(args) == len(names):
        return dict(zip(names, args))
    if star is not None and len(args) > len(names):
        arguments = dict(zip(names, args))
        arguments[star] = args[len(names) :]
        return arguments
    return None


class BatchedMethod:
    """A batched method bound to one object: call it with one request's arguments."""

    __slots__ = ("_batched", "_instance")

    def __init__(self, batched: BatchedFunction, instance: Any):
        self._batched = batched
        self._instance = instance

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        batched = self._batched
        return await batched._submit(batched._state(self._instance), self._instance, args, kwargs)

    @property
    def stats(self) -> BatchStats:
        """What this object's queue has done so far."""
        return self._batched._state(self._instance).stats

    @property
    def max_batch_size(self) -> int:
        return self._batched._state(self._instance).config.max_batch_size

    @property
    def max_latency_ms(self) -> float:
        return self._batched._state(self._instance).config.max_latency_ms

    def set_max_batch_size(self, max_batch_size: int) -> None:
        """Change the most rows per batch for this object, effective for the next batch."""
        self._batched._state(self._instance).config.set_max_batch_size(max_batch_size)

    def set_max_latency_ms(self, max_latency_ms: float) -> None:
        """Change the latency budget for this object, effective for requests arriving from now on."""
        self._batched._state(self._instance).config.set_max_latency_ms(max_latency_ms)

    def __repr__(self) -> str:
        return f"<batched method {self._batched._name} of {self._instance!r}>"


class StreamingBatchedFunction(BatchedFunction):
    """A batched async generator: each caller gets an async iterator over its own rows of every
    step of its batch (see `raystore._private.batching.streaming`)."""

    _streaming = True

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        return self._submit(self._state(None), None, args, kwargs)  # type: ignore[return-value]


class StreamingBatchedMethod(BatchedMethod):
    """A streaming batched method bound to one object: `async for piece in obj.generate(x)`."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:  # type: ignore[override]
        batched = self._batched
        return batched._submit(batched._state(self._instance), self._instance, args, kwargs)  # type: ignore[return-value]


def is_async_generator(func: Any) -> bool:
    """Whether `func` (a function, or an object with `__call__`) is an async generator function."""
    return inspect.isasyncgenfunction(func) or inspect.isasyncgenfunction(getattr(func, "__call__", None))  # noqa: B004
