"""`Runnable`: the class a runner instantiates in each replica, and its `@Runnable.method`s.

    class MyRunnable(raystore.Runnable):
        SUPPORTED_RESOURCES = ("nvidia.com/gpu", "cpu")
        SUPPORTS_CPU_MULTI_THREADING = True

        def __init__(self):
            self.model = load_my_model()

        @raystore.Runnable.method(batchable=True, batch_dim=0)
        def predict(self, x):
            return self.model(x)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar

from raystore.exceptions import InvalidArgument

GPU = "nvidia.com/gpu"
CPU = "cpu"
_MARK = "__raystore_method__"


@dataclass(frozen=True)
class RunnableMethodConfig:
    batchable: bool = False
    batch_dim: tuple[int, int] = (0, 0)  # (input dim, output dim)
    input_spec: Any = None
    output_spec: Any = None


def _batch_dim(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise InvalidArgument(f"batch_dim must be an int or a pair (input_dim, output_dim), got {value!r}")


class Runnable:
    """Base class of what runners run. Subclasses mark the methods runners expose."""

    SUPPORTED_RESOURCES: ClassVar[tuple[str, ...]] = (CPU,)
    SUPPORTS_CPU_MULTI_THREADING: ClassVar[bool] = False
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
            raise InvalidArgument(f"{cls.__name__}.SUPPORTED_RESOURCES: unknown {sorted(unknown)}; use 'cpu' and 'nvidia.com/gpu'")

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
    ) -> Any:
        """Expose a method to runners; `batchable` methods get their calls batched along `batch_dim`."""
        if not isinstance(batchable, bool):
            raise InvalidArgument(f"batchable must be True or False, got {batchable!r}")
        config = RunnableMethodConfig(batchable, _batch_dim(batch_dim), input_spec, output_spec)

        def mark(function: Callable[..., Any]) -> Callable[..., Any]:
            setattr(function, _MARK, config)
            return function

        return mark(func) if func is not None else mark


def assigned_gpu_ids() -> list[str]:
    """The GPUs this process may use: Ray's assignment inside a Ray worker, else CUDA_VISIBLE_DEVICES."""
    import os
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            try:
                return [str(g) for g in ray.get_gpu_ids()]
            except Exception:  # not in a worker (a driver): fall through to the environment
                pass
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() in ("", "-1"):
        return []
    return [g for g in visible.split(",") if g.strip()]
