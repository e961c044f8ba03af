"""`RunnerSpec`: everything a runner is, settled and checked once, frozen. Backends run it; Serve
deployments are built from it; `raystore build` writes it into configs."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from raystore._private.batch_config import BatchConfig
from raystore._private.runner.resources import Resources, parse_resources
from raystore._private.runner.runnable import Runnable
from raystore._private.store.info import ModelSignature
from raystore.exceptions import InvalidArgument
from raystore.tag import validate_serve_name

_METHOD_CONFIG_KEYS = ("max_batch_size", "max_latency_ms", "resources")


class Mode(str, enum.Enum):
    """How a runner is served: its own deployment per method, all methods in one deployment, or
    loaded inside the replica that calls it."""

    PER_METHOD = "per_method"
    COLOCATED = "colocated"
    EMBEDDED = "embedded"


@dataclass(frozen=True, eq=False)
class MethodSpec:
    name: str
    signature: ModelSignature  # batchable, batch_dim, input/output spec, as the runnable declares them
    batch: BatchConfig  # a template: each batch queue of this method works on its own copy
    resources: Resources
    streams: bool = False  # an async generator: called with `async_stream`, answered piece by piece

    @property
    def batchable(self) -> bool:
        return self.signature.batchable


@dataclass(frozen=True, eq=False)
class RunnerSpec:
    name: str
    runnable_class: type[Runnable]
    runnable_init_params: Mapping[str, Any]
    models: tuple[Any, ...]  # the stored models it runs (what `raystore build` pins)
    methods: Mapping[str, MethodSpec]
    resources: Resources
    num_replicas: int
    autoscaling: Mapping[str, Any] | None
    mode: Mode

    @property
    def colocate(self) -> bool:
        return self.mode is Mode.COLOCATED

    @property
    def embedded(self) -> bool:
        return self.mode is Mode.EMBEDDED

    @classmethod
    def build(cls, runnable_class: type[Runnable], options: Mapping[str, Any]) -> RunnerSpec:
        """The spec `Runner(runnable_class, **options)` describes, every argument checked (the error
        says which and why); `options` has every keyword `Runner` takes."""
        name, num_replicas, autoscaling = options["name"], options["num_replicas"], options["autoscaling"]
        resources, colocate = options["resources"], options["colocate"]
        if not (isinstance(runnable_class, type) and issubclass(runnable_class, Runnable)):
            raise InvalidArgument(f"a Runner needs a raystore.Runnable subclass, got {runnable_class!r}")
        if not runnable_class.methods:
            raise InvalidArgument(
                f"{runnable_class.__name__} exposes no methods; mark them with @raystore.Runnable.method"
            )
        name = validate_serve_name(name or runnable_class.__name__.lower(), "runner", "Serve deployments")
        if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
            raise InvalidArgument(f"num_replicas must be a positive int, got {num_replicas!r}")
        if autoscaling is not None and not isinstance(autoscaling, Mapping):
            raise InvalidArgument(f"autoscaling must be a dict of Serve autoscaling_config fields, got {autoscaling!r}")
        gpu_capable, auto_gpu = runnable_class.gpu_capable(), runnable_class.GPU_BY_DEFAULT
        base_resources = parse_resources(resources, gpu_capable=gpu_capable, auto_gpu=auto_gpu)
        method_configs = dict(options["method_configs"] or {})
        unknown = set(method_configs) - set(runnable_class.methods)
        if unknown:
            raise InvalidArgument(
                f"method_configs names {sorted(unknown)}; {name} has {sorted(runnable_class.methods)}"
            )
        defaults = {"max_batch_size": options["max_batch_size"], "max_latency_ms": options["max_latency_ms"]}
        methods = {}
        for method, signature in runnable_class.methods.items():
            overrides = dict(method_configs.get(method) or {})
            bad = set(overrides) - set(_METHOD_CONFIG_KEYS)
            if bad:
                raise InvalidArgument(
                    f"method_configs[{method!r}]: unknown keys {sorted(bad)}; allowed: {', '.join(_METHOD_CONFIG_KEYS)}"
                )
            if colocate and "resources" in overrides:
                raise InvalidArgument(
                    "colocate=True runs every method in one deployment: give resources for the runner, not per method"
                )
            settings = {key: overrides.get(key, value) for key, value in defaults.items()}
            streams, continuous = runnable_class.streams(method), runnable_class.continuous(method)
            if continuous and not (streams and signature.batchable):
                raise InvalidArgument(
                    f"{runnable_class.__name__}.{method}: continuous=True needs a batchable async generator method "
                    f"(continuous batching joins streams between the steps of a batch)"
                )
            batch = BatchConfig(
                **{key: value for key, value in settings.items() if value is not None},
                batch_dim=signature.batch_dim,
                continuous=continuous,
            )
            method_resources = base_resources
            if "resources" in overrides:
                method_resources = parse_resources(
                    overrides["resources"],
                    gpu_capable=gpu_capable,
                    auto_gpu=auto_gpu,
                    where=f"method_configs[{method!r}].resources",
                )
            methods[method] = MethodSpec(method, signature, batch, method_resources, streams)
        mode = Mode.EMBEDDED if options["embedded"] else Mode.COLOCATED if colocate else Mode.PER_METHOD
        return cls(
            name=name,
            runnable_class=runnable_class,
            runnable_init_params=dict(options["runnable_init_params"] or {}),
            models=tuple(options["models"] or ()),
            methods=methods,
            resources=base_resources,
            num_replicas=num_replicas,
            autoscaling=dict(autoscaling) if autoscaling else None,
            mode=mode,
        )
