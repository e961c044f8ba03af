"""`raystore.batch` in a plain asyncio loop, without Ray.

Batch composition is made deterministic with a gate: the first batch blocks until the test releases
it, so the requests sent meanwhile all wait in the queue. Timing-dependent tests assert on behaviour
with wide margins, never on exact times.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter

import numpy as np
import pytest

from raystore import ServiceUnavailable, batch
from raystore.exceptions import InvalidArgument, RaystoreError

pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, timeout=30))


async def settle(condition=lambda: True, timeout: float = 5.0) -> None:
    """Let the event loop run until `condition()` holds."""
    deadline = time.monotonic() + timeout
    await asyncio.sleep(0)
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.001)


class Gated:
    """A batch function that records each batch and blocks the first one until `release()`."""

    def __init__(self, fn=lambda *args, **kwargs: args[0]):
        self.fn = fn
        self.batches: list = []
        self.gate = asyncio.Event()
        self.running = 0
        self.most_running = 0

    def release(self):
        self.gate.set()

    async def __call__(self, *args, **kwargs):
        self.batches.append(args[0] if args else kwargs)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            await self.gate.wait()
            return self.fn(*args, **kwargs)
        finally:
            self.running -= 1


async def gated_burst(batched, model: Gated, payloads):
    """Send the first payload, wait until its batch runs, send the rest, then release the gate."""
    first = asyncio.ensure_future(batched(payloads[0]))
    await settle(lambda: model.batches)
    rest = [asyncio.ensure_future(batched(p)) for p in payloads[1:]]
    await settle()
    model.release()
    return await asyncio.gather(first, *rest)


# ---- correct slices for every container and dim ------------------------------------------------


# name: (batch_dim, payload with k rows, a row-wise function: applied to the batch or to one payload,
# it must give the same rows)
CASES = {
    "numpy dim 0": (0, lambda k: np.arange(3 * k, dtype=float).reshape(k, 3) + k, lambda x: x * 2),
    "numpy dim 1": (1, lambda k: np.arange(2 * k).reshape(2, k) + k, lambda x: x + 1),
    "numpy dim -1": (-1, lambda k: np.ones((2, 2, k)) * k, lambda x: x.sum(axis=0)),
    "numpy (1, 0)": ((1, 0), lambda k: np.arange(4 * k).reshape(4, k) + k, lambda x: x.T.copy()),
    "torch dim 1": (1, lambda k: torch.arange(3 * k).reshape(3, k) + k, lambda x: x * 3),
    "list": (0, lambda k: [f"r{k}.{i}" for i in range(k)], lambda x: [s.upper() for s in x]),
    "pandas": (0, lambda k: pd.DataFrame({"a": np.arange(k) + 10 * k}), lambda df: df.assign(b=df.a * 2)),
    "tuple out": (0, lambda k: np.arange(k) + 10 * k, lambda x: (x + 1, [int(v) for v in x])),
    "dict out": (0, lambda k: torch.ones(k, 2) * k, lambda x: {"sum": x.sum(1), "id": x[:, :1]}),
}


def assert_equal(actual, expected):
    if isinstance(expected, tuple):
        assert isinstance(actual, tuple) and len(actual) == len(expected)
        for a, e in zip(actual, expected):
            assert_equal(a, e)
    elif isinstance(expected, dict):
        assert list(actual) == list(expected)
        for key in expected:
            assert_equal(actual[key], expected[key])
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(actual, expected)
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(actual, expected)
    elif isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(actual, expected)
    else:
        assert actual == expected


@pytest.mark.parametrize("case", list(CASES))
def test_each_caller_gets_its_own_rows(case):
    batch_dim, make, row_wise = CASES[case]
    model = Gated(row_wise)
    batched = batch(max_batch_size=64, batch_dim=batch_dim)(model)
    payloads = [make(k) for k in (1, 3, 2, 5, 1, 4)]

    results = run(gated_burst(batched, model, payloads))

    for payload, result in zip(payloads, results):
        assert_equal(result, row_wise(payload))
    assert len(model.batches) == 2  # the first alone, then all the others together
    assert batched.stats.batch_sizes == Counter({1: 1, 15: 1})


class TwoInputs:
    @batch(max_batch_size=32, batch_dim=1)
    async def score(self, x, weights, *, bias):
        return (x * weights).sum(axis=0, keepdims=True) + bias


def test_several_arguments_share_the_batch_dim():
    async def main():
        model = TwoInputs()
        calls = [model.score(np.full((2, k), k), weights=np.ones((2, k)), bias=np.full((1, k), 100)) for k in (1, 2, 3)]
        return await asyncio.gather(*calls)

    results = run(main())
    for k, result in zip((1, 2, 3), results):
        np.testing.assert_array_equal(result, np.full((1, k), 2 * k + 100))


def test_arguments_that_disagree_on_rows_are_rejected_at_once():
    async def main():
        model = TwoInputs()
        message = "argument 'x' has 2 rows along batch dim 1 but argument 'weights' has 3"
        with pytest.raises(InvalidArgument, match=message):
            await model.score(np.ones((2, 2)), np.ones((2, 3)), bias=np.ones((1, 2)))
        with pytest.raises(InvalidArgument, match="argument 'bias' is a int .* cannot be batched"):
            await model.score(np.ones((2, 2)), np.ones((2, 2)), bias=3)
        with pytest.raises(TypeError):
            await model.score(np.ones((2, 2)))
        assert model.score.stats.requests == 0

    run(main())


def test_requests_of_different_layouts_batch_separately_in_order():
    model = Gated(lambda x: x)
    batched = batch(max_batch_size=64)(model)
    payloads = [np.ones((1, 2)), np.ones((2, 2)), np.ones((1, 3)), np.ones((3, 2)), np.ones((1, 2), np.float32)]
    results = run(gated_burst(batched, model, payloads))
    for payload, result in zip(payloads, results):
        np.testing.assert_array_equal(result, payload)
        assert result.dtype == payload.dtype
    assert [b.shape for b in model.batches] == [(1, 2), (2, 2), (1, 3), (3, 2), (1, 2)]


def test_zero_row_requests_get_zero_rows():
    model = Gated(lambda x: x * 2)
    batched = batch(max_batch_size=8)(model)
    results = run(gated_burst(batched, model, [np.ones((1, 2)), np.ones((0, 2)), np.ones((2, 2))]))
    assert [r.shape for r in results] == [(1, 2), (0, 2), (2, 2)]


# ---- FIFO and oversized requests ----------------------------------------------------------------


def test_rows_are_served_first_in_first_out():
    model = Gated(lambda x: x)
    batched = batch(max_batch_size=5)(model)
    payloads = [np.array([i] * (1 + i % 3)) for i in range(20)]

    results = run(gated_burst(batched, model, payloads))

    seen = np.concatenate(model.batches)
    np.testing.assert_array_equal(seen, np.concatenate(payloads))
    assert all(len(b) <= 5 for b in model.batches)
    for payload, result in zip(payloads, results):
        np.testing.assert_array_equal(result, payload)


def test_a_request_larger_than_max_batch_size_is_split_and_reassembled():
    model = Gated(lambda x: x * 10)
    batched = batch(max_batch_size=8, batch_dim=(1, 0))(model)
    big = np.arange(2 * 25).reshape(2, 25)
    payloads = [np.zeros((2, 1), int), big, np.ones((2, 3), int)]
    model.fn = lambda x: (x * 10).T

    results = run(gated_burst(batched, model, payloads))

    np.testing.assert_array_equal(results[1], big.T * 10)
    np.testing.assert_array_equal(results[2], np.ones((3, 2)) * 10)
    assert [b.shape[1] for b in model.batches] == [1, 8, 8, 8, 4]


# ---- batch_size_fn: batches bounded by units of work ---------------------------------------------


def total_tokens(items):
    """A batch's size: the tokens of all its texts (each request sends a list of texts)."""
    return sum(len(text.split()) for texts in items for text in texts)


def test_batch_size_fn_bounds_batches_by_units_and_never_cuts_a_request():
    model = Gated(lambda texts: [len(t.split()) for t in texts])
    batched = batch(max_batch_size=10, batch_size_fn=total_tokens)(model)
    payloads = [["a"], ["b c d e", "f g"], ["h i j"], ["k l m n o p"], ["q"], ["r s"]]

    results = run(gated_burst(batched, model, payloads))

    assert results == [[1], [4, 2], [3], [6], [1], [2]]
    # sizes 1 | 6 + 3 = 9 (6 more would make 15) | 6 + 1 + 2 = 9: whole requests, within 10 units
    assert model.batches == [["a"], ["b c d e", "f g", "h i j"], ["k l m n o p", "q", "r s"]]
    assert batched.stats.batched_rows == 1 + 9 + 9  # stats count units too


def test_batch_size_fn_may_size_a_batch_other_than_by_adding_its_requests():
    def padded(items):  # every sequence padded to the longest: sequences x longest
        sequences = [seq for sent in items for seq in sent]
        return len(sequences) * max(len(seq) for seq in sequences)

    model = Gated(lambda x: [len(v) for v in x])
    batched = batch(max_batch_size=8, batch_size_fn=padded)(model)
    payloads = [[[1]], [[1, 2]], [[1, 2, 3]], [[4, 5, 6]], [[7]]]  # each request: one sequence

    results = run(gated_burst(batched, model, payloads))

    assert results == [[1], [2], [3], [3], [1]]
    # [1,2] alone is 2; with [1,2,3], 2 x 3 = 6; with [4,5,6] too, 3 x 3 = 9 > 8 (added up: 8, it would fit)
    assert [len(b) for b in model.batches] == [1, 2, 2]


def test_a_failing_or_oversized_batch_size_fn_fails_only_that_request():
    def size(items):
        if any(t == ["bad"] for t in items):
            raise ValueError("cannot size this one")
        return total_tokens(items)

    model = Gated(lambda texts: [t.upper() for t in texts])
    batched = batch(max_batch_size=5, batch_size_fn=size)(model)

    async def main():
        first = asyncio.ensure_future(batched(["x"]))
        await settle(lambda: model.batches)
        rest = [asyncio.ensure_future(batched(p)) for p in (["bad"], ["a b c d e f"], ["y z"])]
        await settle()
        model.release()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    first, bad, huge, fine = run(main())
    assert first == ["X"] and fine == ["Y Z"]
    assert isinstance(bad, ValueError) and "cannot size this one" in str(bad)
    assert isinstance(huge, InvalidArgument) and "size 6" in str(huge) and "max_batch_size=5" in str(huge)
    assert model.batches == [["x"], ["y z"]]  # nothing waits behind the requests that failed

    with pytest.raises(InvalidArgument, match="batch_size_fn must be a function"):
        batch(batch_size_fn=3)
    returns_text = batch(batch_size_fn=lambda items: "2")(Gated())
    with pytest.raises(InvalidArgument, match="must return an int >= 0, got '2'"):
        run(returns_text(["a"]))


# ---- request contexts ------------------------------------------------------------------------------


def test_a_batch_runs_in_no_callers_context_and_lists_one_context_per_request():
    import contextvars

    from raystore import batch_request_contexts

    who = contextvars.ContextVar("who", default=None)  # what a caller's request sets (an id, a span)
    seen = []

    def body(x):
        seen.append((who.get(), batch_request_contexts()))
        return x

    model = Gated(body)
    batched = batch(max_batch_size=8)(model)

    async def as_caller(name, x):
        who.set(name)  # in this caller's own task context, as Serve sets a request's
        return await batched(x)

    results = run(gated_burst(lambda p: as_caller(*p), model, [("first", [1]), ("a", [2]), ("b", [3, 4])]))

    assert results == [[1], [2], [3, 4]]
    # the batches ran as nobody (the first was started by "first"'s arrival, the second by a
    # batch's end); outside Serve, each request's context is None: one per request
    assert seen == [(None, [None]), (None, [None, None])]
    assert batch_request_contexts() == []  # outside a batch


# ---- failures and cancellation ------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def fail_on_negative(x):
    if (x < 0).any():
        raise Boom("negative input")
    return x + 1


def test_a_failing_batch_fails_only_its_own_requests():
    model = Gated(fail_on_negative)
    batched = batch(max_batch_size=2)(model)

    async def main():
        first = asyncio.ensure_future(batched(np.array([0])))
        await settle(lambda: model.batches)
        rest = [asyncio.ensure_future(batched(np.array([v]))) for v in (1, -1, 2, 3)]
        await settle()
        model.release()
        return await asyncio.gather(first, *rest, return_exceptions=True)

    results = run(main())
    # Batches: [0], [1, -1], [2, 3]
    assert results[0] == [1] and results[3] == [3] and results[4] == [4]
    assert isinstance(results[1], Boom) and isinstance(results[2], Boom)
    assert batched.stats.failed_batches == 1


def test_a_wrong_row_count_from_the_function_fails_its_batch_with_a_clear_error():
    model = Gated(lambda x: x[:1])
    batched = batch(max_batch_size=8)(model)

    async def main():
        model.release()
        return await asyncio.gather(batched(np.ones(3)), return_exceptions=True)

    (error,) = run(main())
    assert isinstance(error, InvalidArgument)
    assert "has 1 rows along batch dim 0 but 3 were expected" in str(error)


def test_run_now_runs_fast_batches_in_the_pump_and_declines_to_the_async_path():
    """A batched function with `run_now` (the runner's blocking models) runs each batch right in the
    queue's pump when run_now answers, with no task of its own; when run_now raises RunLater the
    batch goes through the async function as usual. Failures stay with their own batch."""
    from raystore._private.batch_config import BatchConfig
    from raystore._private.batching.api import BatchedFunction
    from raystore._private.batching.dispatcher import RunLater

    calls = []

    def run_now(x):
        if (x < 0).any():
            raise Boom("negative")
        if (x >= 100).any():
            raise RunLater
        calls.append(("now", len(x), asyncio.current_task()))
        return x * 2

    async def later(x):
        calls.append(("later", len(x), asyncio.current_task()))
        return x * 3

    batched = BatchedFunction(later, BatchConfig(max_batch_size=4), run_now=run_now)

    async def main():
        first = await asyncio.gather(*(batched(np.array([v])) for v in range(6)))
        failed = await asyncio.gather(batched(np.array([-1])), return_exceptions=True)
        slow = await asyncio.gather(batched(np.array([100])), batched(np.array([101])))
        return first, failed, slow

    first, failed, slow = run(main())
    assert [int(r[0]) for r in first] == [0, 2, 4, 6, 8, 10]
    assert isinstance(failed[0], Boom)
    assert [int(r[0]) for r in slow] == [300, 303]
    assert [(kind, rows) for kind, rows, _ in calls] == [("now", 4), ("now", 2), ("later", 2)]
    assert calls[0][2] is None and calls[2][2] is not None  # in the pump itself, then in a task
    assert batched.stats.batches == 4 and batched.stats.failed_batches == 1


def test_a_cancelled_caller_is_dropped_and_blocks_nobody():
    model = Gated(lambda x: x)
    batched = batch(max_batch_size=64)(model)

    async def main():
        first = asyncio.ensure_future(batched(np.array([0])))
        await settle(lambda: model.batches)
        tasks = [asyncio.ensure_future(batched(np.array([v]))) for v in (1, 2, 3)]
        await settle()
        tasks[1].cancel()
        await settle()
        model.release()
        return await asyncio.gather(first, *tasks, return_exceptions=True)

    results = run(main())
    assert isinstance(results[2], asyncio.CancelledError)
    assert [list(r) for r in (results[0], results[1], results[3])] == [[0], [1], [3]]
    assert [list(b) for b in model.batches] == [[0], [1, 3]]
    assert batched.stats.cancelled == 1


def test_the_running_count_of_the_next_batch_matches_a_recount():
    # The dispatcher counts the next batch's rows as requests arrive instead of recounting the
    # queue on every arrival; whatever happens (layouts, cancellations, failures, batches, a new
    # max_batch_size), the count must be what a recount gives.
    from raystore._private.batch_config import BatchConfig
    from raystore._private.batching.dispatcher import Dispatcher

    rng = random.Random(3)

    def recount(dispatcher):
        counted = dispatcher._count_ready()
        return counted.rows, counted.open

    async def main():
        gate = asyncio.Event()

        async def execute(arguments):
            await gate.wait()
            x = arguments["x"]
            if x.size and x.flat[0] == -1:
                raise ValueError("boom")
            return x

        config = BatchConfig(max_batch_size=8, max_latency_ms=10_000)
        dispatcher = Dispatcher(execute, config)
        tasks = []
        for step in range(300):
            action = rng.random()
            if action < 0.6:
                rows = rng.choice((0, 1, 1, 2, 3, 9))
                dtype = np.float32 if rng.random() < 0.8 else np.int64
                value = -1 if rng.random() < 0.05 else step
                tasks.append(asyncio.ensure_future(dispatcher.submit({"x": np.full((rows, 2), value, dtype)})))
            elif action < 0.7 and tasks:
                rng.choice(tasks).cancel()
            elif action < 0.75:
                config.set_max_batch_size(rng.choice((4, 8, 16)))
            elif action < 0.9:
                gate.set()
                await asyncio.sleep(0)
                gate.clear()
            await asyncio.sleep(0)
            assert dispatcher._ready_rows() == recount(dispatcher), step
        gate.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert dispatcher.queued_rows == 0

        # A lower max_batch_size closes a next batch that was still open.
        gate.clear()
        config.set_max_batch_size(16)
        tasks = [asyncio.ensure_future(dispatcher.submit({"x": np.zeros((1, 2), np.float32)}))]
        await settle(lambda: dispatcher.running_batches == 1)
        tasks += [asyncio.ensure_future(dispatcher.submit({"x": np.zeros((3, 2), np.float32)})) for _ in range(2)]
        await settle(lambda: dispatcher.queued_rows == 6)
        assert dispatcher._ready_rows() == (6, True)  # behind the running batch, 6 rows could grow to 16
        config.set_max_batch_size(4)
        await asyncio.sleep(0)
        assert dispatcher._ready_rows() == recount(dispatcher) == (6, False)
        gate.set()
        await asyncio.gather(*tasks)

    run(main())


def test_cancelling_a_running_request_leaves_its_batch_mates_alone():
    model = Gated(lambda x: x)
    batched = batch(max_batch_size=64)(model)

    async def main():
        tasks = [asyncio.ensure_future(batched(np.array([v]))) for v in (1, 2)]
        await settle(lambda: model.batches)
        tasks[0].cancel()
        model.release()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = run(main())
    assert isinstance(results[0], asyncio.CancelledError) and list(results[1]) == [2]


def test_a_cancelled_part_of_an_oversized_request_stops_its_remaining_batches():
    model = Gated(lambda x: x)
    batched = batch(max_batch_size=4)(model)

    async def main():
        first = asyncio.ensure_future(batched(np.zeros(1)))
        await settle(lambda: model.batches)
        big = asyncio.ensure_future(batched(np.arange(100)))
        after = asyncio.ensure_future(batched(np.array([7])))
        await settle()
        big.cancel()
        model.release()
        return await asyncio.gather(first, after)

    _, after = run(main())
    assert list(after) == [7]
    assert len(model.batches) == 2


def test_max_concurrent_batches_lets_batches_overlap():
    model = Gated(lambda x: x)
    batched = batch(max_batch_size=2, max_concurrent_batches=3)(model)

    async def main():
        tasks = [asyncio.ensure_future(batched(np.array([v]))) for v in range(6)]
        await settle(lambda: model.running >= 3)
        model.release()
        return await asyncio.gather(*tasks)

    results = run(main())
    assert [list(r) for r in results] == [[v] for v in range(6)]
    assert model.most_running == 3


# ---- per-object queues, plain functions, loops ----------------------------------------------------


class Doubler:
    def __init__(self, offset):
        self.offset = offset
        self.batch_sizes = []

    @batch(max_batch_size=16)
    async def predict(self, x):
        self.batch_sizes.append(len(x))
        await asyncio.sleep(0.001)
        return x * 2 + self.offset


def test_each_object_has_its_own_queue_and_works_across_event_loops():
    one, two = Doubler(0), Doubler(100)

    async def main():
        xs = [np.array([float(i)]) for i in range(10)]
        results = await asyncio.gather(*(one.predict(x) for x in xs), *(two.predict(x) for x in xs))
        for i, result in enumerate(results):
            assert result[0] == 2 * (i % 10) + (0 if i < 10 else 100)

    run(main())
    run(main())  # a second loop gets a fresh queue
    assert one.predict.stats.requests == 20 and two.predict.stats.requests == 20
    assert sum(one.batch_sizes) == 20


def test_the_decorator_can_be_used_bare():
    @batch
    async def double(x):
        return [v * 2 for v in x]

    assert run(double([1, 2])) == [2, 4]
    assert double.stats.requests == 1 and double.__name__ == "double"


def test_only_async_functions_can_be_batched():
    with pytest.raises(TypeError, match="needs an `async def` function"):
        batch(lambda x: x)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"max_batch_size": 2.5}, "max_batch_size must be an integer >= 1"),
        ({"max_latency_ms": 0}, "max_latency_ms must be a number of milliseconds > 0"),
        ({"batch_dim": "rows"}, "batch_dim must be an int or a pair"),
        ({"batch_dim": (0, 1, 2)}, "batch_dim must be an int or a pair"),
        ({"max_concurrent_batches": 0}, "max_concurrent_batches must be an integer >= 1"),
    ],
)
def test_invalid_options_are_clear_errors(options, message):
    with pytest.raises(InvalidArgument, match=message):
        batch(**options)


# ---- runtime tuning and stats -----------------------------------------------------------------------


def test_runtime_tuning_applies_to_the_next_batches():
    model = Doubler(0)
    model.predict.set_max_batch_size(4)
    model.predict.set_max_latency_ms(5_000)
    assert model.predict.max_batch_size == 4 and model.predict.max_latency_ms == 5_000
    assert Doubler(0).predict.max_batch_size == 16  # other objects keep the decorator's settings

    async def main():
        await asyncio.gather(*(model.predict(np.ones(1)) for _ in range(20)))
        assert max(model.batch_sizes) <= 4
        model.predict.set_max_batch_size(10)
        model.batch_sizes.clear()
        await asyncio.gather(*(model.predict(np.ones(1)) for _ in range(20)))
        assert max(model.batch_sizes) == 10

    run(main())
    with pytest.raises(InvalidArgument):
        model.predict.set_max_batch_size(0)
    with pytest.raises(InvalidArgument):
        model.predict.set_max_latency_ms(-1)


def test_lowering_max_batch_size_wakes_a_waiting_queue():
    model = Gated(lambda x: x)
    batched = batch(max_batch_size=64)(model)

    async def main():
        model.release()
        batched.set_max_batch_size(2)
        return await asyncio.gather(*(batched(np.array([v])) for v in range(5)))

    run(main())
    assert [len(b) for b in model.batches] == [2, 2, 1]


def test_stats_count_requests_rows_batches_and_times():
    model = Gated(lambda x: x)
    batched = batch(max_batch_size=4)(model)
    run(gated_burst(batched, model, [np.ones(k) for k in (1, 2, 3, 4)]))
    stats = batched.stats
    assert (stats.requests, stats.rows, stats.batches) == (4, 10, 4)
    assert stats.batch_sizes == Counter({1: 2, 4: 2})  # [1], then 2+3+4 rows as 4, 4, 1
    assert stats.queue_wait.count == 4 and stats.execution.count == 4
    assert stats.execution.max > 0 and stats.queue_wait.max >= stats.queue_wait.min >= 0
    assert stats.mean_batch_size == 2.5 and stats.shed == 0
    json.dumps(stats.as_dict())


# ---- overload: shedding --------------------------------------------------------------------------


def sleeping_model(a: float, b: float):
    """A model that holds an exclusive device for `a + b * rows` seconds."""

    async def model(x):
        await asyncio.sleep(a + b * len(x))
        return x

    return model


async def warm_up(batched, batches: int = 12, rows: int = 1):
    for i in range(batches):
        await asyncio.gather(*(batched(np.ones(1)) for _ in range(rows + i % 3)))


def test_never_sheds_without_a_latency_estimate():
    batched = batch(max_batch_size=4, max_latency_ms=20)(sleeping_model(0.005, 0))

    async def main():
        return await asyncio.gather(*(batched(np.ones(1)) for _ in range(60)), return_exceptions=True)

    results = run(main())
    assert not any(isinstance(r, Exception) for r in results)
    assert batched.stats.shed == 0


def test_never_sheds_under_normal_load():
    batched = batch(max_batch_size=8, max_latency_ms=200)(sleeping_model(0.005, 0.0005))

    async def main():
        await warm_up(batched)
        for _ in range(5):  # bursts well within capacity
            await asyncio.gather(*(batched(np.ones(1)) for _ in range(12)))

    run(main())
    assert batched.stats.shed == 0


def test_overload_is_shed_at_admission_with_a_retry_hint():
    # 4 rows per 10 ms: within 500 ms the model serves about 200 of the 400 rows sent at once.
    batched = batch(max_batch_size=4, max_latency_ms=500)(sleeping_model(0.010, 0))

    async def main():
        await warm_up(batched)
        started = time.monotonic()
        results = await asyncio.gather(*(batched(np.ones(1)) for _ in range(400)), return_exceptions=True)
        return results, time.monotonic() - started

    results, elapsed = run(main())
    rejected = [r for r in results if isinstance(r, ServiceUnavailable)]
    served = [r for r in results if isinstance(r, np.ndarray)]
    assert len(rejected) + len(served) == 400
    assert len(served) >= 20 and len(rejected) >= 100
    assert all(r.retry_after_s > 0 and isinstance(r, RaystoreError) for r in rejected)
    assert "max_latency_ms=500" in str(rejected[-1]) and "retry in" in str(rejected[-1])
    assert elapsed < 3.0  # not the 1 s that serving all 400 rows would take
    assert batched.stats.rejected >= 100


def test_requests_that_can_no_longer_finish_in_time_are_dropped_from_the_queue():
    slow = {"on": False}

    async def model(x):
        await asyncio.sleep(0.3 if slow["on"] else 0.002)
        return x

    batched = batch(max_batch_size=2, max_latency_ms=100)(model)

    async def main():
        await warm_up(batched)
        slow["on"] = True  # the model stalls: what waits behind it expires
        stalled = asyncio.ensure_future(batched(np.ones(1)))
        await asyncio.sleep(0.01)
        waiting = [asyncio.ensure_future(batched(np.ones(1))) for _ in range(4)]
        await stalled
        slow["on"] = False
        return await asyncio.gather(*waiting, return_exceptions=True)

    results = run(main())
    assert all(isinstance(r, ServiceUnavailable) for r in results)
    assert "dropped a request of 1 row(s) after" in str(results[0])
    assert batched.stats.expired == 4


# ---- adaptation ----------------------------------------------------------------------------------


async def open_loop(batched, rate_per_s: float, duration_s: float):
    """Send one-row requests at a steady rate, regardless of how fast they come back."""
    tasks = []
    interval = 1.0 / rate_per_s
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < duration_s:
        due = int((time.monotonic() - start) / interval) + 1 - sent
        for _ in range(max(due, 0)):
            tasks.append(asyncio.ensure_future(batched(np.ones(1))))
            sent += 1
        await asyncio.sleep(interval / 2)
    return await asyncio.gather(*tasks, return_exceptions=True)


def batch_sizes_after_warmup(stats, before: Counter) -> list[int]:
    sizes = []
    for size, count in (stats.batch_sizes - before).items():
        sizes += [size] * count
    return sizes


def test_batches_grow_when_the_per_batch_overhead_is_large():
    def mean_batch(a):
        batched = batch(max_batch_size=256, max_latency_ms=1000)(sleeping_model(a, 0.0001))

        async def main():
            await warm_up(batched)
            before = Counter(batched.stats.batch_sizes)
            await open_loop(batched, rate_per_s=400, duration_s=0.5)
            return batch_sizes_after_warmup(batched.stats, before)

        sizes = run(main())
        return sum(sizes) / len(sizes)

    assert mean_batch(0.030) > 3 * mean_batch(0.001)


def test_batches_shrink_when_the_latency_budget_is_tight():
    def sizes_under(max_latency_ms):
        batched = batch(max_batch_size=64, max_latency_ms=max_latency_ms)(sleeping_model(0.002, 0.001))

        async def main():
            await warm_up(batched)
            before = Counter(batched.stats.batch_sizes)
            results = await open_loop(batched, rate_per_s=1500, duration_s=0.5)  # beyond capacity
            assert any(isinstance(r, np.ndarray) for r in results)
            return batch_sizes_after_warmup(batched.stats, before)

        return run(main())

    loose, tight = sizes_under(2000), sizes_under(25)
    assert max(tight) <= 25  # a batch of 25 rows alone needs 27 ms
    assert sum(loose) / len(loose) > 2 * sum(tight) / len(tight)


def test_a_closed_loop_of_callers_settles_on_full_batches():
    # Callers with a fixed concurrency (a connection pool) send again a few ms after each answer.
    # Dispatching whatever is queued when the model frees up splits them into a big batch and a
    # straggler batch that holds the model while everyone else queues behind it; waiting for the
    # callers just answered keeps them in one batch.
    callers = 32
    batched = batch(max_batch_size=callers, max_latency_ms=1000)(sleeping_model(0.020, 0.0002))
    rng = random.Random(3)

    async def caller(start_after: float, stop_at: float):
        await asyncio.sleep(start_after)  # callers start out of step, as clients do
        while time.monotonic() < stop_at:
            await batched(np.ones(1))
            await asyncio.sleep(rng.uniform(0.0005, 0.004))  # the round trip back to the caller

    async def main():
        await warm_up(batched)
        stop_at = time.monotonic() + 1.5
        callers_done = asyncio.gather(*(caller(i * 0.0015, stop_at) for i in range(callers)))
        await asyncio.sleep(0.5)
        before = Counter(batched.stats.batch_sizes)
        await callers_done
        return batch_sizes_after_warmup(batched.stats, before)

    sizes = run(main())
    assert sum(sizes) / len(sizes) >= 0.75 * callers, Counter(sizes)


# ---- the per-call fast paths ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "source, args",
    [
        ("def f(x): pass", (1,)),
        ("def f(x, y): pass", (1, 2)),
        ("def f(self, x): pass", ("me", 1)),
        ("def f(*args): pass", (1, 2)),
        ("def f(*args): pass", ()),
        ("def f(x, *rest, **kwargs): pass", (1, 2, 3)),
        ("def f(x, *rest): pass", (1,)),
    ],
)
def test_positional_binding_matches_inspect(source, args):
    import inspect

    from raystore._private.batching.api import _bind_positional, _positional_names

    namespace: dict = {}
    exec(source, namespace)
    signature = inspect.signature(namespace["f"])
    layout = _positional_names(signature)
    assert layout is not None
    assert _bind_positional(layout, args) == dict(signature.bind(*args).arguments)


def test_positional_binding_leaves_defaults_and_keywords_to_inspect():
    import inspect

    from raystore._private.batching.api import _bind_positional, _positional_names

    assert _positional_names(inspect.signature(lambda x, y=1: None)) is None
    assert _positional_names(inspect.signature(lambda x, *, bias: None)) is None
    assert _bind_positional(_positional_names(inspect.signature(lambda x, y: None)), (1,)) is None  # inspect says why


def test_metric_buffer_hands_ray_aggregated_counts_once_a_flush():
    from raystore._private.metric_buffer import MetricBuffer

    class Recorded:
        """Stands in for a Ray Counter or Histogram: records what reaches it."""

        def __init__(self):
            self.calls = []

        def inc(self, value, tags):
            self.calls.append((value, tags))

        def observe(self, value, tags):
            self.calls.append((value, tags))

    counter, histogram = Recorded(), Recorded()

    async def main():
        buffer = MetricBuffer(interval_s=0.05)
        a, b = (("api", "a"),), (("api", "b"),)
        for _ in range(3):
            buffer.inc(counter, a)
        buffer.inc(counter, b, 5)
        buffer.observe(histogram, a, 1.5)
        buffer.observe(histogram, a, 2.5)
        assert counter.calls == [] and histogram.calls == []  # nothing reaches Ray per request
        await settle(lambda: counter.calls and histogram.calls)
        buffer.inc(counter, a)
        await settle(lambda: len(counter.calls) == 3)

    run(main())
    assert counter.calls == [(3, {"api": "a"}), (5, {"api": "b"}), (1, {"api": "a"})]
    assert histogram.calls == [(1.5, {"api": "a"}), (2.5, {"api": "a"})]

    # Past max_observations a histogram gets a uniform sample of that size; counters stay exact.
    sampled, exact = Recorded(), Recorded()

    async def sample():
        buffer = MetricBuffer(interval_s=3600, max_observations=50)
        random.seed(7)
        for value in range(5000):
            buffer.observe(sampled, (("api", "a"),), value)
            buffer.inc(exact, (("api", "a"),))
        buffer.observe(sampled, (("api", "b"),), -1.0)
        buffer.flush()
        return buffer

    buffer = run(sample())
    kept = [value for value, tags in sampled.calls if tags == {"api": "a"}]
    assert len(kept) == 50 and len(set(kept)) == 50 and set(kept) <= set(range(5000))
    assert sum(value >= 2500 for value in kept) >= 10  # not just the first values offered
    assert (-1.0, {"api": "b"}) in sampled.calls and exact.calls == [(5000, {"api": "a"})]
    buffer.flush()
    assert len(sampled.calls) == 51  # a flush starts the next interval empty
    with pytest.raises(ValueError, match="max_observations must be at least 1"):
        MetricBuffer(max_observations=0)
