"""A service whose APIs stream, through a served continuous-batching runner (imported by the replicas)."""

import asyncio
import os
import time

import pydantic

import raystore
from raystore.io import JSON, Text


class Counter(raystore.Runnable):
    """Row `n` streams the tokens `n:1 .. n:n`, batched continuously. A row that is a file's path
    streams three tokens, and the third step waits for that file to exist (the test writes it
    once it has read the second piece, so a server that held pieces back would never answer)."""

    def __init__(self):
        self.rows_now = 0  # rows in the running batch of `count` (0: none runs)

    @raystore.Runnable.method
    async def rows(self, _: object = None) -> int:
        return self.rows_now

    @raystore.Runnable.method(batchable=True, continuous=True)
    async def count(self, ns: list):
        states = [[n, 0] for n in ns]
        try:
            while states:
                self.rows_now = len(states)
                gates = [n for n, produced in states if isinstance(n, str) and produced == 2]
                if gates:
                    deadline = time.monotonic() + 60
                    while not all(os.path.exists(g) for g in gates) and time.monotonic() < deadline:
                        await asyncio.sleep(0.01)
                await asyncio.sleep(0.002)
                out = []
                for state in states:
                    state[1] += 1
                    limit = 3 if isinstance(state[0], str) else state[0]
                    out.append(StopIteration if state[1] > limit else f"{state[0]}:{state[1]}")
                update = yield out
                states = update.keep(states)
                if update.joined:
                    states += [[n, 0] for n in update.joined["ns"]]
        finally:
            self.rows_now = 0

    @raystore.Runnable.method
    async def letters(self, word: str):
        for letter in word:
            if letter == "!":
                raise ValueError("no exclamations")
            yield letter


# colocated: `rows` answers from the replica that runs `count`
counter = raystore.Runner(Counter, name="counter", resources={"num_cpus": 0.05}, max_batch_size=8, colocate=True)
svc = raystore.Service("streams", runners=[counter])


class Count(pydantic.BaseModel):
    n: int | str = pydantic.Field(description="how many tokens, or a gate file's path (three tokens)")


@svc.api(input=JSON(pydantic_model=Count), output=Text(stream=True))
async def tokens(request: Count):
    """Server-Sent Events: one token per event."""
    async for piece in counter.count.async_stream([request.n]):
        yield piece[0]


@svc.api(input=JSON(), output=JSON())
async def rows(_: object) -> int:
    """How many rows the runner's running batch has (0: none runs)."""
    return await counter.rows.async_run()


@svc.api(input=JSON(), output=JSON(stream="jsonl"))
async def tokens_jsonl(n: int):
    """JSON lines: one {"token": ...} per line."""
    if not isinstance(n, int) or n < 0:
        raise raystore.exceptions.BadInput(f"n must be a count >= 0, got {n!r}")
    async for piece in counter.count.async_stream([n]):
        yield {"token": piece[0]}


@svc.api(input=Text(), output=Text(stream="text"))
async def spell(word: str):
    """Plain text, a letter at a time; a `!` fails mid-stream."""
    async for letter in counter.letters.async_stream(word):
        yield letter


@svc.api(input=Text(), output=JSON(stream="sse"))
async def spell_events(word: str):
    """SSE of JSON pieces; a `!` fails mid-stream, ending it with an error event."""
    async for letter in counter.letters.async_stream(word):
        yield {"letter": letter}
