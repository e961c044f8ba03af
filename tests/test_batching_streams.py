"""Streaming batch functions: `raystore.batch` on async generators, static and continuous, in plain
asyncio (Serve's streaming batching scenarios, written afresh)."""

import asyncio

import numpy as np
import pytest

import raystore
from raystore._private.batching.streaming import BatchUpdate, is_end
from raystore.exceptions import InvalidArgument


async def collect(stream):
    return [piece async for piece in stream]


def test_each_caller_streams_its_own_rows_of_every_step_in_order():
    batches = []

    @raystore.batch(max_batch_size=16, max_latency_ms=1000)
    async def count(xs: list):
        batches.append(list(xs))
        for step in range(3):
            await asyncio.sleep(0)
            yield [f"{x}.{step}" for x in xs]

    async def main():
        return await asyncio.gather(*(collect(count([f"c{i}"])) for i in range(5)))

    results = asyncio.run(main())
    assert results == [[[f"c{i}.0"], [f"c{i}.1"], [f"c{i}.2"]] for i in range(5)]
    assert batches == [[f"c{i}" for i in range(5)]]  # one batch served all five streams


def test_a_caller_with_several_rows_gets_them_together_numpy_along_dim_1():
    @raystore.batch(max_batch_size=8, batch_dim=(1, 0))
    async def double(x: np.ndarray):
        for _ in range(2):
            x = x * 2
            yield x.T  # (rows, features)

    async def main():
        return await asyncio.gather(collect(double(np.ones((2, 3)))), collect(double(np.full((2, 1), 5.0))))

    many, one = asyncio.run(main())
    assert [p.shape for p in many] == [(3, 2), (3, 2)] and many[1][0, 0] == 4
    assert [p.tolist() for p in one] == [[[10.0, 10.0]], [[20.0, 20.0]]]


def test_a_caller_that_stops_early_leaves_and_the_others_finish():
    steps = []

    @raystore.batch(max_batch_size=8)
    async def ticks(xs: list):
        for step in range(6):
            steps.append(step)
            await asyncio.sleep(0.005)
            yield [x * 10 + step for x in xs]

    async def quitter():
        got = []
        stream = ticks([1])
        async for piece in stream:
            got.append(piece[0])
            if len(got) == 2:
                break
        await stream.aclose()
        return got

    async def cancelled():
        task = asyncio.ensure_future(collect(ticks([3])))
        await asyncio.sleep(0.012)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return "cancelled"

    async def main():
        return await asyncio.gather(quitter(), collect(ticks([2])), cancelled())

    first, second, third = asyncio.run(main())
    assert first == [10, 11] and third == "cancelled"
    assert second == [[20], [21], [22], [23], [24], [25]]
    assert steps == list(range(6))


def test_a_batch_whose_callers_all_left_is_closed():
    state = {"steps": 0, "closed": False}

    @raystore.batch(max_batch_size=8)
    async def forever(xs: list):
        try:
            while True:
                state["steps"] += 1
                await asyncio.sleep(0.002)
                yield xs
        finally:
            state["closed"] = True

    async def main():
        stream = forever([1])
        assert await anext(stream) == [1]
        await stream.aclose()
        for _ in range(100):
            if state["closed"]:
                break
            await asyncio.sleep(0.002)

    asyncio.run(main())
    assert state["closed"] and state["steps"] <= 3


def test_an_error_mid_stream_reaches_the_callers_of_that_batch_only():
    @raystore.batch(max_batch_size=2, max_latency_ms=1000)
    async def fragile(xs: list):
        yield xs
        if "bad" in xs:
            raise ValueError("step 2 broke")
        yield xs

    async def run_one(x):
        got = []
        try:
            async for piece in fragile([x]):
                got.append(piece[0])
        except ValueError as exc:
            return got, str(exc)
        return got, None

    async def main():
        return await asyncio.gather(run_one("bad"), run_one("ok1"), run_one("ok2"), run_one("ok3"))

    results = asyncio.run(main())
    # batches of two: [bad, ok1] fails after one step, [ok2, ok3] streams on
    assert results[0] == (["bad"], "step 2 broke") and results[1] == (["ok1"], "step 2 broke")
    assert results[2] == (["ok2", "ok2"], None) and results[3] == (["ok3", "ok3"], None)


def test_a_stop_sentinel_ends_one_callers_stream():
    @raystore.batch(max_batch_size=8)
    async def upto(ns: list):
        for step in range(1, 5):
            yield [step if step <= n else StopIteration for n in ns]

    async def main():
        return await asyncio.gather(*(collect(upto([n])) for n in (1, 3, 4)))

    assert asyncio.run(main()) == [[[1]], [[1], [2], [3]], [[1], [2], [3], [4]]]
    assert is_end([StopIteration, StopAsyncIteration()]) and not is_end([StopIteration, 1])
    assert not is_end(np.array([1, 2]))  # compared by identity, never element-wise


def _counter(record):
    """A continuous generator: row x streams x pieces `x:1 .. x:x`, then its end sentinel."""

    @raystore.batch(max_batch_size=4, max_latency_ms=1000, continuous=True)
    async def count(xs: list):
        states = [[x, 0] for x in xs]
        record.append(("start", list(xs)))
        while states:
            record.append(("step", len(states)))
            await asyncio.sleep(0.01)
            out = []
            for state in states:
                state[1] += 1
                out.append(StopIteration if state[1] > state[0] else f"{state[0]}:{state[1]}")
            update = yield out
            assert isinstance(update, BatchUpdate)
            states = update.keep(states)
            if update.joined:
                states += [[x, 0] for x in update.joined["xs"]]
                record.append(("joined", list(update.joined["xs"])))

    return count


def test_continuous_batching_joins_between_steps_and_lets_finished_streams_go():
    record = []
    count = _counter(record)

    async def later(x, delay):
        await asyncio.sleep(delay)
        return await collect(count([x]))

    async def main():
        return await asyncio.gather(later(3, 0), later(8, 0), later(2, 0.025), later(1, 0.045))

    results = asyncio.run(main())
    assert [[p[0] for p in r] for r in results] == [
        ["3:1", "3:2", "3:3"],
        [f"8:{i}" for i in range(1, 9)],
        ["2:1", "2:2"],
        ["1:1"],
    ]
    starts = [r for r in record if r[0] == "start"]
    assert starts == [("start", [3, 8])]  # everyone else joined the running batch
    assert ("joined", [2]) in record and ("joined", [1]) in record


def test_continuous_batching_never_passes_max_batch_size():
    record = []
    count = _counter(record)  # max_batch_size=4

    async def main():
        return await asyncio.gather(*(collect(count([n])) for n in (2, 2, 2, 2, 2, 3, 1)))

    results = asyncio.run(main())
    assert [len(r) for r in results] == [2, 2, 2, 2, 2, 3, 1]
    steps = [rows for kind, rows in record if kind == "step"]
    assert max(steps) == 4 and steps[0] == 4
    assert record[0] == ("start", [2, 2, 2, 2])
    assert sum(len(xs) for kind, xs in record if kind in ("start", "joined")) == 7  # all in one batch


def test_batch_size_fn_bounds_streaming_batches_by_units():
    batches = []

    @raystore.batch(max_batch_size=10, max_latency_ms=1000, batch_size_fn=lambda items: sum(len(i[0]) for i in items))
    async def echo(texts: list):
        batches.append(list(texts))
        yield texts

    async def main():
        return await asyncio.gather(*(collect(echo([t])) for t in ("aaaa", "bbbb", "cccc", "dd")))

    assert [r[0][0] for r in asyncio.run(main())] == ["aaaa", "bbbb", "cccc", "dd"]
    assert batches == [["aaaa", "bbbb"], ["cccc", "dd"]]


def test_streaming_misuse_is_a_clear_error():
    with pytest.raises(InvalidArgument, match="continuous=True.*async generators"):

        @raystore.batch(continuous=True)
        async def not_a_generator(xs):
            return xs

    @raystore.batch(max_batch_size=2)
    async def small(xs: list):
        yield xs

    async def too_many():
        with pytest.raises(InvalidArgument, match="never cut across batches"):
            await collect(small([1, 2, 3]))

    asyncio.run(too_many())


def test_batch_update_keeps_lists_arrays_and_refuses_a_wrong_length():
    update = BatchUpdate(left=(1,), rows=3, joined=None)
    assert update.keep(["a", "b", "c"]) == ["a", "c"]
    assert update.keep(np.arange(3)).tolist() == [0, 2]
    assert update.kept == 2
    with pytest.raises(ValueError, match="2 values for a step of 3 rows"):
        update.keep(["a", "b"])


def test_a_streaming_batch_sees_its_callers_contexts():
    seen = []

    @raystore.batch(max_batch_size=8)
    async def who(xs: list):
        seen.append(len(raystore.batch_request_contexts()))
        yield xs

    async def main():
        await asyncio.gather(collect(who([1])), collect(who([2])))

    asyncio.run(main())
    assert seen == [2]
    assert raystore.batch_request_contexts() == []


def test_a_long_continuous_batch_keeps_no_finished_request_in_its_queue():
    """Requests that joined a batch that never empties leave the queue as they are taken (only
    the pump dropped them, and a continuous batch holds the pump's only slot)."""

    @raystore.batch(max_batch_size=8, continuous=True)
    async def echo(xs: list):
        rows = [[x, 0] for x in xs]
        while rows:
            await asyncio.sleep(0.001)
            for row in rows:
                row[1] += 1
            update = yield [StopIteration if row[1] > (2 if row[0] >= 0 else 400) else row[0] for row in rows]
            rows = update.keep(rows)
            if update.joined:
                rows += [[x, 0] for x in update.joined["xs"]]

    async def client(i):
        for _ in range(40):
            assert [p async for p in echo([i])] == [[i], [i]]

    async def long_one():  # keeps the batch from ever emptying
        rows = 0
        async for _ in echo([-1]):
            rows += 1
        return rows

    async def main():
        await asyncio.gather(*(client(i) for i in range(6)))

    loop_queue_sizes = []

    async def watched():
        longest = asyncio.ensure_future(long_one())
        await asyncio.sleep(0.01)
        task = asyncio.ensure_future(main())
        while not task.done():
            dispatcher = echo._state(None).dispatcher()
            if dispatcher is not None:
                loop_queue_sizes.append(len(dispatcher._queue))
            await asyncio.sleep(0.005)
        await task
        assert not longest.done()  # the batch ran all along
        longest.cancel()

    asyncio.run(watched())
    assert max(loop_queue_sizes) <= 12  # 240 streams went through; at most a few wait at a time


def test_a_failure_after_a_caller_left_is_not_reported_as_unretrieved(caplog):
    import gc

    @raystore.batch(max_batch_size=8)
    async def fails_late(xs: list):
        yield xs
        await asyncio.sleep(0.01)
        raise RuntimeError("boom at step 2")

    async def leaver():
        stream = fails_late([1])
        await anext(stream)
        await asyncio.sleep(0.05)  # the batch fails meanwhile
        await stream.aclose()

    async def stayer():
        with pytest.raises(RuntimeError, match="boom"):
            await collect(fails_late([2]))

    async def main():
        await asyncio.gather(leaver(), stayer())

    asyncio.run(main())
    gc.collect()
    assert "never retrieved" not in caplog.text
