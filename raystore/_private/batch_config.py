"""`BatchConfig`: the validated, runtime-tunable settings of one batched function, and the only
home of batch settings' defaults and validation. A leaf module: the store normalises a
signature's `batch_dim` here too, and runners build one `BatchConfig` per method."""

from __future__ import annotations

import numbers
from collections.abc import Callable

from raystore.exceptions import InvalidArgument

DEFAULT_MAX_BATCH_SIZE = 100
DEFAULT_MAX_LATENCY_MS = 10_000.0


class BatchConfig:
    """Settings shared by every dispatcher of one batched method on one object.

    `max_batch_size` and `max_latency_ms` may change at runtime; dispatchers subscribe with
    `on_change` so that a waiting queue re-evaluates at once. `batch_dim` and
    `max_concurrent_batches`, `batch_size_fn` and `continuous` are fixed at decoration time.
    """

    def __init__(
        self,
        *,
        max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
        max_latency_ms: float = DEFAULT_MAX_LATENCY_MS,
        batch_dim: int | tuple[int, int] = 0,
        max_concurrent_batches: int = 1,
        batch_size_fn: Callable[[list], int] | None = None,
        continuous: bool = False,
    ):
        self.max_batch_size = validate_max_batch_size(max_batch_size)
        if batch_size_fn is not None and not callable(batch_size_fn):
            raise InvalidArgument(f"batch_size_fn must be a function of a list of items, got {batch_size_fn!r}")
        self.batch_size_fn = batch_size_fn  # a batch's size in units (tokens, pixels); None: its rows
        self.max_latency_ms = validate_max_latency_ms(max_latency_ms)
        self.input_dim, self.output_dim = validate_batch_dim(batch_dim)
        self.max_concurrent_batches = _positive_int(max_concurrent_batches, "max_concurrent_batches")
        if not isinstance(continuous, bool):
            raise InvalidArgument(f"continuous must be True or False, got {continuous!r}")
        self.continuous = continuous  # a streaming batch takes new requests between its steps
        self._listeners: list[Callable[[], None]] = []

    def copy(self) -> BatchConfig:
        """An independent copy without listeners (each object gets its own tunable settings)."""
        return BatchConfig(
            max_batch_size=self.max_batch_size,
            max_latency_ms=self.max_latency_ms,
            batch_dim=(self.input_dim, self.output_dim),
            max_concurrent_batches=self.max_concurrent_batches,
            batch_size_fn=self.batch_size_fn,
            continuous=self.continuous,
        )

    @property
    def batch_dim(self) -> tuple[int, int]:
        return self.input_dim, self.output_dim

    @property
    def max_latency_s(self) -> float:
        return self.max_latency_ms / 1000.0

    def set_max_batch_size(self, value: int) -> None:
        self.max_batch_size = validate_max_batch_size(value)
        self._notify()

    def set_max_latency_ms(self, value: float) -> None:
        self.max_latency_ms = validate_max_latency_ms(value)
        self._notify()

    def on_change(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: Callable[[], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def _notify(self) -> None:
        for listener in list(self._listeners):
            listener()

    def __getstate__(self) -> dict:
        # Listeners point at live event loops; a pickled config starts without them.
        return {**self.__dict__, "_listeners": []}

    def __repr__(self) -> str:
        return (
            f"BatchConfig(max_batch_size={self.max_batch_size}, max_latency_ms={self.max_latency_ms:g}, "
            f"batch_dim=({self.input_dim}, {self.output_dim}), max_concurrent_batches={self.max_concurrent_batches}"
            + (f", batch_size_fn={self.batch_size_fn!r}" if self.batch_size_fn is not None else "")
            + (", continuous=True)" if self.continuous else ")")
        )


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidArgument(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def validate_max_batch_size(value: object) -> int:
    """`max_batch_size` counts rows along the batch dimension, not requests."""
    return _positive_int(value, "max_batch_size")


def validate_max_latency_ms(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
        raise InvalidArgument(f"max_latency_ms must be a number of milliseconds > 0, got {value!r}")
    return float(value)


def validate_batch_dim(value: object, name: str = "batch_dim") -> tuple[int, int]:
    """`batch_dim` is one int for both sides, or `(input_dim, output_dim)`; plain ints come back
    (numpy's would not survive model.yaml). `name` is how the error message calls the setting."""
    if isinstance(value, tuple) and len(value) == 2:
        dims = value
    elif isinstance(value, list) and len(value) == 2:
        dims = tuple(value)
    else:
        dims = (value, value)
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise InvalidArgument(f"{name} must be an int or a pair (input_dim, output_dim) of ints, got {value!r}")
    return int(dims[0]), int(dims[1])
