"""`raystore.Model`: a stored model version that becomes a Runner with `to_runner`, and the
Runnable that runs a stored model through its framework adapter.

The store's `StoredModel` knows nothing of runners; this layer adds them. Everything public that
hands out models (`raystore.models`, the framework modules) returns this class.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from raystore._private.frameworks import Framework, framework_for
from raystore._private.runner.runnable import CPU, GPU, Runnable
from raystore._private.runner.runner import Runner
from raystore._private.store import StoredModel
from raystore.exceptions import InvalidArgument


class Model(StoredModel):
    """A model version in the store: `tag`, `info`, `path`, `custom_objects`, ... and `to_runner`."""

    @classmethod
    def of(cls, stored: StoredModel) -> Model:
        return stored if isinstance(stored, cls) else cls(stored.store, stored.info)

    def to_runner(self, name: str | None = None, **options: Any) -> Runner:
        """A `raystore.Runner` for this model; options as `Runner` takes them (max_batch_size,
        max_latency_ms, method_configs, resources, num_replicas, autoscaling, colocate, embedded)."""
        runner_name = name or self.tag.name.replace(".", "-")
        if not framework_for(self.info.module).has_loader:
            raise InvalidArgument(
                f"model {self.tag} holds files of your own, which raystore cannot load: write a raystore.Runnable "
                f"that reads them (raystore.models.get({str(self.tag)!r}).path_of('FILE')) and run it with "
                "raystore.Runner(YourRunnable, models=[model])"
            )
        if not self.info.signatures:
            raise InvalidArgument(
                f"model {self.tag} has no signatures, so a runner has nothing to call; save it with "
                "signatures naming its methods, e.g. signatures={'predict': {'batchable': True}}, or write a "
                "raystore.Runnable that loads it"
            )
        return Runner(runnable_for(self), name=runner_name, models=[self], **options)


def runnable_for(model: StoredModel) -> type[Runnable]:
    """A Runnable that loads `model` with its framework and exposes each signature as a method."""
    framework = framework_for(model.info.module)

    def __init__(runnable: Runnable) -> None:
        framework.warn_on_other_versions(model)
        runnable.model = framework.load_for_runner(model)

    namespace: dict[str, Any] = {
        "SUPPORTED_RESOURCES": (GPU, CPU) if framework.gpu_capable else (CPU,),
        "GPU_BY_DEFAULT": framework.uses_gpu(),
        "SUPPORTS_CPU_MULTI_THREADING": True,
        "__init__": __init__,
    }
    for method, signature in model.info.signatures.items():
        namespace[method] = Runnable.method(
            _signature_method(framework, method),
            batchable=signature.batchable,
            batch_dim=signature.batch_dim,
            input_spec=signature.input_spec,
            output_spec=signature.output_spec,
        )
    return type(f"{framework.name}_runnable", (Runnable,), namespace)


def _signature_method(framework: Framework, method: str) -> Callable[..., Any]:
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return framework.run_method(self.model, method, args, kwargs)

    call.__name__ = call.__qualname__ = method
    return call


def framework_functions(framework: Framework) -> tuple[Callable[..., Model], Callable[..., Any], Callable[..., Model]]:
    """A public framework module's `save_model`, `load_model` and `get`: the adapter's own, with
    the models they return as `raystore.Model`s."""

    @functools.wraps(framework.save_model)
    def save_model(*args: Any, **kwargs: Any) -> Model:
        return Model.of(framework.save_model(*args, **kwargs))

    @functools.wraps(framework.get)
    def get(tag: Any) -> Model:
        return Model.of(framework.get(tag))

    return save_model, framework.load_model, get
