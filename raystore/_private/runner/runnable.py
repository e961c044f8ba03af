"""`Runnable`: the class a runner instantiates in each replica, and its `@Runnable.method`s.

class MyRunnable(raystore.Runnable):
    SUPPORTED_RESOURCES = ("nvidia.com/gpu", "cpu")
    SUPPORTS_CPU_MULTI_THREADING = True

    def __init__(self):
        self.model = load_my_model()

    @raystore.Runnable.method(batchable=True, batch_dim=0)
    def predict(self, x):
        return self.model(x)

    @raystore.Runnable.method(batchable=True, continuous=True)
    async def generate(self, prompts):  # an async generator streams: runner.generate.async_stream(...)
        ...

    def check_health(self):  # optional: Serve calls it every few seconds in each replica
        if self.model.broken:
            raise RuntimeError("model lost its device")  # the replica is then replaced
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, ClassVar

from raystore._private.store.info import ModelSignature
from raystore.exceptions import InvalidArgument

GPU = "nvidia.com/gpu"
CPU = "cpu"
_MARK = "__raystore_method__"
_CONTINUOUS = "__raystore_continuous__"


# A runnable method is configured exactly as a stored model's signature is.
RunnableMethodConfig = ModelSignature


class Runnable:
    """Base class of what runners run. Subclasses mark the methods runners expose."""

    SUPPORTED_RESOURCES: ClassVar[tuple[str, ...]] = (CPU,)
    SUPPORTS_CPU_MULTI_THREADING: ClassVar[bool] = False
    # whether resources="auto" asks for a GPU (on a cluster with GPUs); None: whenever it can use one
    GPU_BY_DEFAULT: ClassVar[bool | None] = None
    methods: ClassVar[dict[str, RunnableMethodConfig]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        methods = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                config = getattr(value, _MARK, None)
                if isinstance(config, RunnableMethodConfig):
                    methods[name] = config
                elif name in methods and callable(value):
                    del methods[name]  # overridden without the decorator: no longer exposed
        cls.methods = methods
        unknown = set(cls.SUPPORTED_RESOURCES) - {CPU, GPU}
        if unknown:
            raise InvalidArgument(
                f"{cls.__name__}.SUPPORTED_RESOURCES: unknown {sorted(unknown)}; use 'cpu' and 'nvidia.com/gpu'"
            )

    @classmethod
    def streams(cls, method: str) -> bool:
        """Whether `method` is an async generator: its calls stream."""
        return inspect.isasyncgenfunction(getattr(cls, method, None))

    @classmethod
    def continuous(cls, method: str) -> bool:
        """Whether `method` was marked `continuous=True` (continuous batching of its streams)."""
        return bool(getattr(getattr(cls, method, None), _CONTINUOUS, False))

    @classmethod
    def gpu_capable(cls) -> bool:
        return GPU in cls.SUPPORTED_RESOURCES

    @staticmethod
    def method(
        func: Callable[..., Any] | None = None,
        *,
        batchable: bool = False,
        batch_dim: int | tuple[int, int] = 0,
        input_spec: Any = None,
        output_spec: Any = None,
        continuous: bool = False,
    ) -> Any:
        """Expose a method to runners; `batchable` methods get their calls batched along `batch_dim`.

        A method that is an async generator streams (`runner.m.async_stream(...)`); batched, it
        runs step by step as `raystore.batch` runs async generators, and `continuous=True` lets
        requests join and leave its batches between steps (it then receives a `BatchUpdate` from
        each `yield`)."""
        settings = {
            "batchable": batchable,
            "batch_dim": batch_dim,
            "input_spec": input_spec,
            "output_spec": output_spec,
        }
        name = getattr(func, "__name__", "method")
        config = ModelSignature.from_value(name, settings)

        def mark(function: Callable[..., Any]) -> Callable[..., Any]:
            setattr(function, _MARK, config)
            setattr(function, _CONTINUOUS, continuous)
            return function

        return mark(func) if func is not None else mark
