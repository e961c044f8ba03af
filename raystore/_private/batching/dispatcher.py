"""`Dispatcher`: the asyncio side of batching. It queues requests, cuts batches, runs them and hands
every caller its rows. What to do and when is asked of `BatchPolicy`.

One dispatcher serves one batched method of one object on one event loop. There is no background
task: the queue is "pumped" (a plain function scheduled with `call_soon`) whenever something
changes: a request arrives or is cancelled, a batch finishes, a timer set by the policy fires, or
the settings change. Arrivals within one loop iteration are thus seen together. The pump, and so
every batch, runs in a fresh context (`contexts.neutral()`), never in the context of the caller
whose arrival scheduled it; a batch sees its callers' request contexts (`contexts.serving`).

With a `batch_size_fn`, the policy counts its units (tokens, pixels, nodes) instead of rows, and
a request is never cut across batches (its units are not rows); without one, units are rows.

A streaming function (an async generator) runs each batch step by step (`streaming`): its
requests are taken whole, never cut, and with `continuous=True` requests join a running batch
between steps. Streams are not shed by the latency model: a step's time says nothing of how long a
stream runs (Serve's `max_ongoing_requests` bounds them); `max_latency_ms` bounds only how long a
first batch waits to fill.

A batch runs in a task of its own, or, when the dispatcher has an `execute_now` that accepts it (a
fast blocking model), right in the pump: no task to create and schedule, so its callers wake one
loop iteration sooner.
"""

from __future__ import annotations

import asyncio
import logging
import numbers
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from raystore._private.batch_config import BatchConfig
from raystore._private.batching import contexts
from raystore._private.batching.containers import concat, describe_members, slice_rows, split
from raystore._private.batching.policy import BatchPolicy, Wait
from raystore._private.batching.stats import BatchObserver
from raystore._private.batching.streaming import BatchUpdate, StreamOut, is_end, positions_of
from raystore.exceptions import InvalidArgument, QueueFull

logger = logging.getLogger("raystore.batch")

_EVENTS = ("request_admitted", "request_rejected", "request_cancelled", "request_started", "batch_finished")

Arguments = dict[str, Any]  # one call's arguments by parameter name, as `inspect.BoundArguments` holds them


class RunLater(Exception):
    """Raised by a dispatcher's `execute_now` to decline a batch: it goes through `execute`, awaited
    in a task of its own."""


@dataclass(eq=False, slots=True)
class _Request:
    arguments: Arguments
    rows: int
    units: int  # what it counts for in a batch: its rows, or its batch_size_fn size
    item: Any  # what batch_size_fn sizes (the caller's first argument); None without one
    context: Any  # the caller's request context (Serve's, in a replica), for the batch to see
    layout: Hashable  # requests batch together only when their layouts are equal
    future: asyncio.Future
    enqueued_at: float
    deadline: float
    sheddable: bool  # admitted on a trusted latency estimate; requests admitted blind are always served
    whole: bool  # taken whole by one batch (sized by batch_size_fn, or streamed), never cut
    stream: StreamOut | None  # a streaming request's pieces not read yet; None for a plain one
    taken: int = 0  # rows already handed to batches
    settled: bool = False  # all rows handed to batches, or the future resolved: nothing left to take
    received: int = 0  # rows whose results came back
    outputs: list[tuple[int, Any]] | None = None  # (first row, result piece) of a request cut across batches

    @property
    def rows_left(self) -> int:
        return self.rows - self.taken

    @property
    def units_left(self) -> int:
        if self.whole:
            return 0 if self.taken else self.units
        return self.rows - self.taken

    def end(self, error: BaseException | None = None) -> None:
        """Resolve the request's future (a streaming one: its stream ends), unless it is done."""
        future = self.future
        if not future.done():
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        if self.stream is not None:
            self.stream.wake()

    @property
    def waiting(self) -> bool:
        """Whether some of its rows still wait for a batch."""
        return not self.settled and not self.future.done()


@dataclass(slots=True)
class _NextBatch:
    """What the next batch could take: its rows so far, whether later arrivals could still join
    it, and the layout they must share. Requests join it first in, first out, while they are
    compatible: the one rule for counting the next batch and for taking it."""

    rows: int = 0
    open: bool = True
    layout: Hashable | None = None

    def joins(self, request: _Request) -> bool:
        """Whether `request` may ride in this batch; an incompatible one closes it (FIFO stops there)."""
        if self.layout is None:
            self.layout = request.layout
        elif request.layout != self.layout:
            self.open = False
            return False
        return True

    def count(self, request: _Request, limit: int) -> None:
        """Count `request`'s waiting rows in, if it joins; the batch closes once `limit` rows are in.
        Runs for every arrival: `joins` is asked only when the layouts differ (or none is set)."""
        if not self.open or (request.layout != self.layout and not self.joins(request)):
            return
        self.rows += request.units_left
        if self.rows >= limit:
            self.open = False


@dataclass(eq=False, slots=True)
class _Piece:
    """Rows `[start, stop)` of one request, as they ride in one batch."""

    request: _Request
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    def arguments(self, input_dim: int) -> Arguments:
        request = self.request
        if self.start == 0 and self.stop == request.rows:
            return request.arguments
        return slice_rows(request.arguments, input_dim, self.start, self.stop, "arguments")


class Dispatcher:
    """Batches calls to `execute` for one event loop.

    `execute` receives one batch's arguments by name (each concatenated along the input batch dim)
    and returns the batch result, which is split along the output batch dim.
    """

    def __init__(
        self,
        execute: Callable[[Arguments], Awaitable[Any]],
        config: BatchConfig,
        *,
        name: str = "batch",
        observers: Sequence[BatchObserver] = (),
        policy: BatchPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        execute_now: Callable[[Arguments], Any] | None = None,
        streaming: bool = False,
    ):
        """`streaming`: `execute` returns an async generator yielding one result per step."""
        self._loop = asyncio.get_running_loop()
        self._streaming = streaming
        self._whole = streaming or config.batch_size_fn is not None  # requests taken whole, never cut
        self._execute = execute
        self._execute_now = execute_now
        self._config = config
        self._name = name
        # Each event's handlers, looked up once: events fire several times per request.
        self._handlers = {event: tuple(getattr(observer, event) for observer in observers) for event in _EVENTS}
        self.policy = policy or BatchPolicy(config)
        self._clock = clock
        self._queue: deque[_Request] = deque()
        self._queued_rows = 0  # rows admitted and not yet handed to a batch
        self._running: dict[asyncio.Task, float] = {}  # batch task -> its predicted end
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        # The next batch, kept up to date while the queue only grows; None: count again. Arrivals
        # pump one by one, and a recount each time costs O(queue).
        self._ready: _NextBatch | None = None
        config.on_change(self._on_config_change)

    @property
    def queued_rows(self) -> int:
        """Rows (or batch_size_fn units) admitted and not yet handed to a batch."""
        return self._queued_rows

    @property
    def running_batches(self) -> int:
        return len(self._running)

    def close(self) -> None:
        """Stop listening to settings changes (the loop is gone); queued requests are not touched."""
        self._config.remove_listener(self._on_config_change)
        if self._timer is not None:
            self._timer.cancel()

    async def submit(self, arguments: Arguments, item: Any = None) -> Any:
        """Queue one call's arguments and return its slice of the batch result. `item`: what
        `batch_size_fn` sizes of this call (its first argument), when the config has one."""
        request = self._enqueue(arguments, item, None)
        future = request.future
        try:
            return await future
        finally:
            # Delivered requests are settled already; this is for failures and cancellations (the
            # caller's cancellation cancels `future`), cheaper than a done-callback per request.
            if not request.settled or future.cancelled():
                self._on_request_done(request)

    async def submit_stream(self, arguments: Arguments, item: Any = None) -> AsyncIterator[Any]:
        """Queue one call of a streaming function and yield its rows of each step of its batch.
        Leaving early (breaking out, `aclose()`, cancellation) takes the call out of its batch."""
        request = self._enqueue(arguments, item, StreamOut())
        stream, future = request.stream, request.future
        try:
            while True:
                if stream.pieces:
                    yield stream.pieces.popleft()
                elif future.done():
                    error = future.exception()
                    if error is not None:
                        raise error
                    return
                else:
                    stream.waiter = self._loop.create_future()
                    await stream.waiter
        finally:
            if not future.done():
                future.cancel()  # left early: its batch lets it go at the next step
            elif not future.cancelled():
                future.exception()  # seen: a failure after it left is no one's to report
            if not request.settled or future.cancelled():
                self._on_request_done(request)

    def _enqueue(self, arguments: Arguments, item: Any, stream: StreamOut | None) -> _Request:
        """Admit one call (or reject it with `QueueFull`) and queue it."""
        config = self._config
        names = tuple(arguments)
        rows, layouts = describe_members(
            tuple(arguments.values()), config.input_dim, lambda: [f"argument {name!r}" for name in names]
        )
        units = rows if config.batch_size_fn is None else self._units_of(item)
        if stream is not None and units > config.max_batch_size:
            raise InvalidArgument(
                f"{self._name}: a streamed request of {units} rows cannot fit in a batch of "
                f"max_batch_size={config.max_batch_size} (a stream is never cut across batches); "
                f"send fewer rows or raise max_batch_size"
            )
        now = self._clock()
        policy = self.policy
        policy.on_arrival(now, units)
        deadline = policy.deadline(now, units)
        if stream is None:
            slot_free_at = self._slot_free_at(now)
            retry_after = policy.admit(now, units, self._queued_rows, slot_free_at, deadline)
            if retry_after is not None:
                self._notify("request_rejected", units, "admission")
                backlog = self.policy.backlog_time(now, self._queued_rows, slot_free_at)
                raise QueueFull(
                    f"{self._name}: overloaded, rejected a request of {units} {self._unit}(s): the work ahead of it "
                    f"({self._queued_rows} queued {self._unit}s, about {backlog * 1000:.0f} ms) would make it finish "
                    f"after max_latency_ms={config.max_latency_ms:g}; retry in {retry_after:.3f} s or add replicas",
                    retry_after_s=retry_after,
                )
        request = _Request(
            arguments=arguments,
            rows=rows,
            units=units,
            item=item,
            context=contexts.caller_context(),
            layout=(names, layouts),
            future=self._loop.create_future(),
            enqueued_at=now,
            deadline=deadline,
            sheddable=stream is None and policy.latency.trusted,
            whole=stream is not None or config.batch_size_fn is not None,
            stream=stream,
        )
        self._queue.append(request)
        self._queued_rows += units
        if self._ready is not None:
            self._count_arrival(request)
        self._notify("request_admitted", units)
        if self._arrival_may_dispatch():
            self._schedule_pump()
        return request

    @property
    def _unit(self) -> str:
        return "row" if self._config.batch_size_fn is None else "unit"

    def _units_of(self, item: Any) -> int:
        """A request's size by `batch_size_fn`, which fails this request alone when it fails."""
        config = self._config
        units = _batch_size(config.batch_size_fn, [item])
        if units > config.max_batch_size:
            raise InvalidArgument(
                f"{self._name}: a request of size {units} (by batch_size_fn) cannot fit in a batch of "
                f"max_batch_size={config.max_batch_size}; raise max_batch_size or check batch_size_fn"
            )
        return units

    # ---- the pump ----------------------------------------------------------------------------

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump, context=contexts.neutral())

    def _arrival_may_dispatch(self) -> bool:
        """Whether a new arrival can change what the pump does now: not while every batch slot is
        busy, since the batch that finishes pumps. Under load this spares most requests a pass
        over the queue."""
        return len(self._running) < self._config.max_concurrent_batches

    def _on_config_change(self) -> None:
        # Settings may change from another thread (a synchronous `reconfigure`).
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._on_settings_changed, context=contexts.neutral())

    def _on_settings_changed(self) -> None:
        self._ready = None  # a new max_batch_size moves where the next batch is full
        self._schedule_pump()

    def _pump(self) -> None:
        self._pump_scheduled = False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while len(self._running) < self._config.max_concurrent_batches:
            head = self._head()
            if head is None:
                return
            now = self._clock()
            ready_rows, can_grow = self._ready_rows()
            decision = self.policy.decide(now, ready_rows, can_grow, head.enqueued_at, head.deadline)
            if isinstance(decision, Wait):
                self._timer = self._loop.call_later(
                    decision.until - now, self._schedule_pump, context=contexts.neutral()
                )
                return
            if head.sheddable and head.taken == 0 and self.policy.is_late(now, decision.rows, head.deadline):
                self._expire(head, now)
                continue
            limit = decision.rows
            if self._config.batch_size_fn is not None and limit >= ready_rows:
                # all that is ready, which was counted by adding sizes up: the function may size
                # them together differently, so let it fill the batch up to its real bound
                limit = self._config.max_batch_size
            pieces, units = self._take(limit)
            if not pieces:
                return
            self._start_batch(pieces, units, now)

    def _head(self) -> _Request | None:
        """The oldest request still waiting for rows to be dispatched."""
        queue = self._queue
        while queue and not queue[0].waiting:
            queue.popleft()
        return queue[0] if queue else None

    def _ready_rows(self) -> tuple[int, bool]:
        """Rows the next batch could take now, and whether later arrivals could still join it."""
        ready = self._ready
        if ready is None:
            ready = self._ready = self._count_ready()
        return ready.rows, ready.open

    def _count_ready(self) -> _NextBatch:
        ready = _NextBatch()
        limit = self._config.max_batch_size
        for request in self._queue:
            if not ready.open:
                break
            if request.waiting:
                ready.count(request, limit)
        return ready

    def _count_arrival(self, request: _Request) -> None:
        """`_count_ready` after `request` joined the end of the queue, without a recount."""
        self._ready.count(request, self._config.max_batch_size)

    def _take(self, limit: int) -> tuple[list[_Piece], int]:
        """Hand the oldest compatible rows, at most `limit`, to a new batch; a request that does not
        fit entirely gives its first rows now and the rest to the next batch. Returns the pieces
        and the batch's size (its rows, or its batch_size_fn units)."""
        if self._whole:
            return self._take_whole(limit, [])
        self._ready = None
        pieces: list[_Piece] = []
        rows = 0
        batch = _NextBatch()
        now = self._clock()
        for request in self._queue:
            if not request.waiting:
                continue
            if not batch.joins(request):
                break
            if rows >= limit and request.rows_left > 0:
                break
            count = min(request.rows_left, limit - rows)
            if request.taken == 0:
                self._notify("request_started", now - request.enqueued_at)
            pieces.append(_Piece(request, request.taken, request.taken + count))
            request.taken += count
            rows += count
            self._queued_rows -= count
            if request.rows_left > 0:
                break  # the batch is full
            request.settled = True
        return pieces, rows

    def _take_whole(
        self, limit: int, members: list[_Request], layout: Hashable | None = None
    ) -> tuple[list[_Piece], int]:
        """`_take` for requests taken whole (sized by `batch_size_fn`, or streamed): the oldest
        compatible ones while the batch they make with `members` (the requests already in it: a
        continuous batch's, whose `layout` joiners must share) stays within `limit`. A batch_size_fn
        is asked of all of them at once, since a size need not add up: padding to the longest
        sequence does not. A first request (no members) is always taken: it was checked to fit
        alone as it arrived. Returns the pieces and the size of the whole batch, members included."""
        self._ready = None
        self._head()  # drop what was taken: a continuous batch holds the slot, so no pump does it
        pieces: list[_Piece] = []
        size_fn = self._config.batch_size_fn
        items = [member.item for member in members]
        units = sum(member.units for member in members)
        batch = _NextBatch(layout=layout)
        now = self._clock()
        for request in self._queue:
            if not request.waiting:
                continue
            if not batch.joins(request):
                break
            if pieces or members:
                if size_fn is None:
                    size = units + request.units
                else:
                    try:
                        size = _batch_size(size_fn, [*items, request.item])
                    except Exception:
                        size = limit + 1  # it sized the request alone: leave it to a batch of its own
                if size > limit:
                    break
                units = size
            else:
                units = request.units
            items.append(request.item)
            self._notify("request_started", now - request.enqueued_at)
            pieces.append(_Piece(request, 0, request.rows))
            request.taken = request.rows
            request.settled = True
            self._queued_rows -= request.units
        return pieces, units

    def _expire(self, request: _Request, now: float) -> None:
        waited_ms = (now - request.enqueued_at) * 1000
        retry_after = self.policy.backlog_time(now, self._queued_rows, self._slot_free_at(now))
        self._notify("request_rejected", request.units, "queue")
        request.future.set_exception(
            QueueFull(
                f"{self._name}: overloaded, dropped a request of {request.units} {self._unit}(s) after {waited_ms:.0f} ms "
                f"in the queue: it could no longer finish within max_latency_ms={self._config.max_latency_ms:g}; "
                f"retry later or add replicas",
                retry_after_s=max(retry_after, self.policy.latency.predict(1)),
            )
        )
        self._on_request_done(request)  # deduct its rows now rather than on the next loop iteration

    def _on_request_done(self, request: _Request) -> None:
        """A request's future resolved: by its result, an error, or the caller's cancellation."""
        self._ready = None
        if not request.settled:
            self._queued_rows -= request.units_left  # its remaining rows will never be dispatched
            request.settled = True
        if request.future.cancelled():
            self._notify("request_cancelled")
        self._schedule_pump()

    def _slot_free_at(self, now: float) -> float:
        """When the next batch slot is predicted to free up (`now` if one is free)."""
        if len(self._running) < self._config.max_concurrent_batches:
            return now
        return min(self._running.values())

    # ---- running batches -------------------------------------------------------------------------

    def _start_batch(self, pieces: list[_Piece], rows: int, now: float) -> None:
        """Run a batch of `rows` rows (batch_size_fn units, with one: what the policy counts)."""
        if self._streaming:
            task = self._loop.create_task(self._run_stream([piece.request for piece in pieces], rows))
            self._running[task] = now + self.policy.latency.predict(rows)
            task.add_done_callback(self._on_batch_done)
            return
        batch = None
        if self._execute_now is not None:
            started = self._clock()
            # A model that answers at once runs right here: no task to create and schedule, and
            # its callers wake one loop iteration sooner.
            try:
                batch = self._concat(pieces)
                with contexts.serving(_contexts_of(pieces)):
                    result = self._execute_now(batch)
            except RunLater:
                pass
            except Exception as exc:
                self._fail_batch(pieces, rows, started, exc)
                return
            else:
                self._finish_batch(pieces, rows, started, result)
                return
        task = self._loop.create_task(self._run_batch(pieces, rows, batch))
        self._running[task] = now + self.policy.latency.predict(rows)
        task.add_done_callback(self._on_batch_done)

    def _on_batch_done(self, task: asyncio.Task) -> None:
        self._running.pop(task, None)
        self._schedule_pump()

    async def _run_batch(self, pieces: list[_Piece], rows: int, batch: Arguments | None) -> None:
        started = self._clock()
        try:
            if batch is None:
                batch = self._concat(pieces)
            with contexts.serving(_contexts_of(pieces)):
                result = await self._execute(batch)
        except asyncio.CancelledError:
            for piece in pieces:
                piece.request.future.cancel()
            raise
        except Exception as exc:
            self._fail_batch(pieces, rows, started, exc)
            return
        self._finish_batch(pieces, rows, started, result)

    async def _run_stream(self, members: list[_Request], units: int) -> None:
        """Run a streaming batch step by step, handing every member its rows of each step (see
        `streaming`). Each step is timed as a batch of the rows it had."""
        config = self._config
        clock = self._clock
        layout = members[0].layout
        generator = None
        update: BatchUpdate | None = None
        try:
            batch = concat([member.arguments for member in members], config.input_dim, "arguments")
            with contexts.serving(_contexts_of_requests(members)):
                generator = self._execute(batch)
            if not hasattr(generator, "asend"):
                raise TypeError(f"{self._name} is a streaming batch function but returned {type(generator).__name__}")
            while True:
                started = clock()
                with contexts.serving(_contexts_of_requests(members)):
                    try:
                        step = await (generator.__anext__() if update is None else generator.asend(update))
                    except StopAsyncIteration:
                        break
                finished = clock()
                self.policy.on_batch_done(units, finished - started, finished)
                self._notify("batch_finished", units, len(members), finished - started, False)
                outputs = split(step, config.output_dim, [m.rows for m in members], f"a step of {self._name}")
                for member, output in zip(members, outputs):
                    if member.future.done():
                        continue  # it left
                    if is_end(output):
                        member.end()
                    else:
                        member.stream.put(output)
                leaving = [member.future.done() for member in members]
                if not config.continuous:
                    if all(leaving):
                        break
                    continue
                kept = [member for member, leaves in zip(members, leaving) if not leaves]
                # the joiners, and the size the policy times the next step as (members included)
                pieces, units = self._take_whole(config.max_batch_size, kept, layout)
                if not pieces and not kept:
                    break
                joiners = [piece.request for piece in pieces]
                left, rows = positions_of([m.rows for m in members], leaving), sum(m.rows for m in members)
                members = kept + joiners  # before anything can fail: a joiner is this batch's to answer now
                joined = concat([j.arguments for j in joiners], config.input_dim, "arguments") if joiners else None
                update = BatchUpdate(left=left, rows=rows, joined=joined, joined_rows=sum(j.rows for j in joiners))
        except asyncio.CancelledError:
            for member in members:
                member.future.cancel()  # the replica is going away: so are its streams
            raise
        except Exception as exc:
            self._notify("batch_finished", units, len(members), 0.0, True)
            for member in members:
                member.end(exc)
        finally:
            for member in members:
                member.end()  # the generator finished: so did every stream still in it
            if generator is not None:
                await _close_quietly(generator, self._name)

    def _concat(self, pieces: list[_Piece]) -> Arguments:
        input_dim = self._config.input_dim
        return concat([piece.arguments(input_dim) for piece in pieces], input_dim, "arguments")

    def _finish_batch(self, pieces: list[_Piece], rows: int, started: float, result: Any) -> None:
        """Time the batch, and hand every piece its rows of `result`."""
        try:
            outputs = split(
                result, self._config.output_dim, [piece.rows for piece in pieces], f"the result of {self._name}"
            )
        except Exception as exc:
            self._fail_batch(pieces, rows, started, exc)
            return
        finished = self._clock()
        elapsed = finished - started
        self.policy.on_batch_done(rows, elapsed, finished)
        self._notify("batch_finished", rows, _count_requests(pieces), elapsed, False)
        for piece, output in zip(pieces, outputs):
            self._deliver(piece, output)

    def _fail_batch(self, pieces: list[_Piece], rows: int, started: float, exc: Exception) -> None:
        """A failing batch fails its own requests, with its error."""
        self._ready = None  # rows of theirs still queued are no longer waiting
        self._notify("batch_finished", rows, _count_requests(pieces), self._clock() - started, True)
        for piece in pieces:
            if not piece.request.future.done():
                piece.request.future.set_exception(exc)

    def _deliver(self, piece: _Piece, output: Any) -> None:
        request = piece.request
        if request.future.done():  # cancelled, or another piece of it failed
            return
        if piece.start == 0 and piece.stop == request.rows:  # the whole request rode in this batch
            request.future.set_result(output)
            return
        if request.outputs is None:
            request.outputs = []
        request.outputs.append((piece.start, output))
        request.received += piece.rows
        if request.received < request.rows:
            return
        request.outputs.sort(key=lambda item: item[0])
        try:
            result = concat([out for _, out in request.outputs], self._config.output_dim, f"the result of {self._name}")
        except Exception as exc:
            request.future.set_exception(exc)
        else:
            request.future.set_result(result)
        request.outputs.clear()

    def _notify(self, event: str, *args: Any) -> None:
        for handler in self._handlers[event]:
            handler(*args)


def _contexts_of(pieces: list[_Piece]) -> list[Any]:
    return [piece.request.context for piece in pieces]


def _contexts_of_requests(requests: list[_Request]) -> list[Any]:
    return [request.context for request in requests]


async def _close_quietly(generator: Any, name: str) -> None:
    """Close a batch's generator; its own error on the way out is logged, not raised: its
    callers have had their answer."""
    try:
        await generator.aclose()
    except Exception:
        logger.exception("%s: the streaming batch function failed while closing", name)


def _count_requests(pieces: list[_Piece]) -> int:
    """How many requests ride in a batch (a request cut across batches counts in each)."""
    return len({id(piece.request) for piece in pieces})


def _batch_size(size_fn: Callable[[list], int], items: list) -> int:
    size = size_fn(items)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 0:
        raise InvalidArgument(f"batch_size_fn must return an int >= 0, got {size!r}")
    return int(size)
