"""Streaming batches: what a batched async generator and its callers exchange.

A batched function that is an async generator runs a batch in *steps*: each `yield` gives one
result for the whole batch, which is split along the output batch dim, each caller receiving its
own rows of every step as one piece of its stream (`async for piece in self.generate(x)`).

- A caller's stream ends when the generator ends, or when all its rows of a step are an end
  sentinel (`StopIteration` or `StopAsyncIteration`, the class or an instance, as `@serve.batch`
  takes them): in a list result, `[tok, StopIteration, tok]` ends the second caller only.
- A caller that stops early (it is cancelled, its client went away, it closed its iterator with
  `aclose()`; breaking out of `async for` closes one nobody else refers to) leaves the batch; the
  others go on. A batch all of whose callers have left is closed (`aclose()`).
- With `continuous=True` the batch changes between steps: callers whose stream ended or who left
  go, and queued requests join, up to `max_batch_size`. The generator learns of it through the
  value of its `yield`, a `BatchUpdate`:

      @raystore.batch(max_batch_size=64, continuous=True)
      async def generate(self, prompts: list[str]):
          states = [self.start(p) for p in prompts]
          while states:
              update = yield self.step(states)             # one token per row
              states = update.keep(states)                 # drop the rows that left
              if update.joined:                            # add the rows that joined, at the end
                  states += [self.start(p) for p in update.joined["prompts"]]

  A batch with no rows left and none joining is closed, so the loop need not test for it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

_END = (StopIteration, StopAsyncIteration)


@dataclass(frozen=True)
class BatchUpdate:
    """What changed in a continuous batch since the last step, sent into the generator by `yield`.

    The rows of the next step are the rows kept, in their order, then the rows joined.
    """

    left: tuple[int, ...]  # positions, among the last step's rows, of the rows that left
    rows: int  # how many rows the last step had
    joined: dict[str, Any] | None  # the joining requests' arguments by parameter name, concatenated; None: nobody
    joined_rows: int = 0

    def keep(self, values: Any) -> Any:
        """`values` (one per row of the last step: a list, a numpy array or a torch tensor, along
        dim 0) without the rows that left."""
        if not self.left:
            return values
        if len(values) != self.rows:
            raise ValueError(f"BatchUpdate.keep: got {len(values)} values for a step of {self.rows} rows")
        gone = set(self.left)
        kept = [i for i in range(self.rows) if i not in gone]
        if isinstance(values, list):
            return [values[i] for i in kept]
        if isinstance(values, tuple):
            return tuple(values[i] for i in kept)
        return values[kept]  # numpy arrays and torch tensors take a list of positions

    @property
    def kept(self) -> int:
        return self.rows - len(self.left)


def is_end(piece: Any) -> bool:
    """Whether a caller's rows of one step say its stream has ended (each is an end sentinel)."""
    if type(piece) is list and piece:
        return all(_is_sentinel(item) for item in piece)
    return _is_sentinel(piece)


def _is_sentinel(value: Any) -> bool:
    # by identity: `in` would compare arrays element-wise
    return value is StopIteration or value is StopAsyncIteration or isinstance(value, _END)


class StreamOut:
    """The pieces one caller has received and not read yet, and a way to wake it."""

    __slots__ = ("pieces", "waiter")

    def __init__(self) -> None:
        self.pieces: deque[Any] = deque()
        self.waiter: asyncio.Future | None = None

    def put(self, piece: Any) -> None:
        self.pieces.append(piece)
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def positions_of(rows: Sequence[int], leaving: Sequence[bool]) -> tuple[int, ...]:
    """The row positions of the requests that leave, given each request's rows in batch order."""
    out: list[int] = []
    start = 0
    for count, leaves in zip(rows, leaving):
        if leaves:
            out.extend(range(start, start + count))
        start += count
    return tuple(out)
