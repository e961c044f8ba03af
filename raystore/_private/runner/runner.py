"""`Runner` and `RunnerMethod`: a frozen `RunnerSpec` plus the one backend that runs it now.

Backends, one per mode, all with `call`, `call_async`, `remote`, `stats` and `stats_view`:
- `LocalBackend`: in this process, after `init_local()`;
- `EmbeddedBackend`: an `embedded=True` runner, loaded in the replica that calls it;
- `ServedBackend`: the runner's own Serve deployments, reached through handles.
A runner without a backend is not running yet: calls say how to start it.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Coroutine, Mapping
from typing import Any, Protocol

from raystore._private.batching import BatchStats
from raystore._private.replica import in_serve_replica
from raystore._private.runner.local import EmbeddedBackend, LocalBackend
from raystore._private.runner.resources import Resources
from raystore._private.runner.runnable import Runnable
from raystore._private.runner.served import ServedBackend, runner_applications
from raystore._private.runner.spec import MethodSpec, RunnerSpec
from raystore._private.store.info import ModelSignature
from raystore.exceptions import InvalidArgument, RunnerNotReady


class Backend(Protocol):
    def call(self, name: str, args: tuple, kwargs: dict) -> Any: ...
    def call_async(self, name: str, args: tuple, kwargs: dict) -> Coroutine[Any, Any, Any]: ...
    def remote(self, name: str, args: tuple, kwargs: dict) -> Any: ...
    def stream(self, name: str, args: tuple, kwargs: dict) -> AsyncIterator[Any]: ...
    def stats(self, name: str) -> BatchStats | None: ...
    def stats_view(self, name: str) -> dict[str, Any] | None: ...


class RunnerMethod:
    """One method of a runner: `run` (blocking), `async_run`, and `remote` (served: a response to
    await later or pass to another deployment without materialising it)."""

    __slots__ = ("name", "runner", "spec")

    def __init__(self, runner: Runner, spec: MethodSpec):
        self.runner, self.spec, self.name = runner, spec, spec.name

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self.runner._running_backend().call(self.name, args, kwargs)

    def async_run(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        """A coroutine to await: `await runner.predict.async_run(x)`."""
        # Every request of a served model passes here: the backend inline, no call to find it.
        backend = self.runner._backend or self.runner._running_backend()
        return backend.call_async(self.name, args, kwargs)

    def remote(self, *args: Any, **kwargs: Any) -> Any:
        return self.runner._running_backend().remote(self.name, args, kwargs)

    def async_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        """The pieces of a streaming method (an async generator), as they come:
        `async for piece in runner.generate.async_stream(x)`."""
        if not self.spec.streams:
            raise InvalidArgument(
                f"runner {self.runner.name!r}: {self.name} does not stream (it is not an async generator); "
                "call it with run() or async_run()"
            )
        return self.runner._running_backend().stream(self.name, args, kwargs)

    @property
    def streams(self) -> bool:
        """Whether the method streams (an async generator): call it with `async_stream`."""
        return self.spec.streams

    @property
    def stats(self) -> BatchStats | None:
        """What this method's batch queue in this process has done (local and embedded runners);
        None when the method is not batched or runs in the runner's own replicas."""
        backend = self.runner._backend
        return backend.stats(self.name) if backend is not None else None

    async def replica_stats(self) -> dict[str, Any] | None:
        """What this method's batch queue has done, as `BatchStats.as_dict()` with its settings now
        under "settings": in this process
        (local and embedded runners), or in the one runner replica Serve routes the question to
        (served). None when the method is not batched or the runner is not running."""
        backend = self.runner._backend
        if backend is None:
            return None
        remote = getattr(backend, "replica_stats", None)
        if remote is not None:
            return await remote(self.name)
        return backend.stats_view(self.name)

    @property
    def config(self) -> ModelSignature:
        """How the method may be called (batchable, batch_dim, specs), as the Runnable declares it."""
        return self.spec.signature

    @property
    def batchable(self) -> bool:
        return self.spec.batchable

    @property
    def max_batch_size(self) -> int:
        return self.spec.batch.max_batch_size

    @property
    def max_latency_ms(self) -> float:
        return self.spec.batch.max_latency_ms

    @property
    def resources(self) -> Resources:
        return self.spec.resources

    def __repr__(self) -> str:
        return f"RunnerMethod({self.runner.name}.{self.name}, batchable={self.batchable})"


class _CallableRunnerMethod(RunnerMethod):
    """A runner method named `run`, which shadows `Runner.run` and so must be callable itself."""

    __slots__ = ()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*args, **kwargs)


class Runner:
    """Runs a `Runnable`'s methods: locally after `init_local()`, embedded in the calling replica,
    or as one Serve deployment per method (all in one with `colocate=True`)."""

    def __init__(
        self,
        runnable_class: type[Runnable],
        *,
        name: str | None = None,
        runnable_init_params: Mapping[str, Any] | None = None,
        models: list[Any] | None = None,
        max_batch_size: int | None = None,
        max_latency_ms: float | None = None,
        method_configs: Mapping[str, Mapping[str, Any]] | None = None,
        resources: Mapping[str, Any] | str | None = None,
        num_replicas: int = 1,
        autoscaling: Mapping[str, Any] | None = None,
        colocate: bool = False,
        embedded: bool = False,
    ):
        options = {key: value for key, value in locals().items() if key not in ("self", "runnable_class")}
        self._start(RunnerSpec.build(runnable_class, options), backend=None)

    def _start(self, spec: RunnerSpec, backend: Backend | None) -> None:
        self.spec = spec
        self._backend = backend
        self._backend_lock = threading.Lock()  # one backend, even when threads start it at once
        self.methods: dict[str, RunnerMethod] = {name: RunnerMethod(self, m) for name, m in spec.methods.items()}
        if "run" in self.methods:
            # A method named `run` (an ONNX graph's) is reached as `runner.run.run(x)`, BentoML's
            # spelling, and `runner.run(x)` still calls it.
            self.run = _CallableRunnerMethod(self, spec.methods["run"])  # type: ignore[method-assign]
            self.methods["run"] = self.run

    @classmethod
    def _from_spec(cls, spec: RunnerSpec, backend: Backend | None) -> Runner:
        runner = cls.__new__(cls)
        runner._start(spec, backend)
        return runner

    # ---- what it is: the spec -------------------------------------------------------------------

    name = property(lambda self: self.spec.name)
    runnable_class = property(lambda self: self.spec.runnable_class)
    runnable_init_params = property(lambda self: self.spec.runnable_init_params)
    models = property(lambda self: self.spec.models)
    resources = property(lambda self: self.spec.resources)
    num_replicas = property(lambda self: self.spec.num_replicas)
    autoscaling = property(lambda self: self.spec.autoscaling)
    colocate = property(lambda self: self.spec.colocate)
    embedded = property(lambda self: self.spec.embedded)

    def __getattr__(self, item: str) -> RunnerMethod:
        methods = self.__dict__.get("methods", {})
        if item in methods:
            return methods[item]
        spec = self.__dict__.get("spec")
        raise AttributeError(f"runner {spec.name if spec else '?'!r} has no method {item!r}; it has {sorted(methods)}")

    def __repr__(self) -> str:
        return f"Runner(name={self.name!r}, methods={sorted(self.methods)})"

    @property
    def _default_method(self) -> RunnerMethod:
        if len(self.methods) == 1:
            return next(iter(self.methods.values()))
        if "__call__" in self.methods:
            return self.methods["__call__"]
        raise InvalidArgument(
            f"runner {self.name!r} has several methods {sorted(self.methods)}; call one, e.g. runner.{sorted(self.methods)[0]}.run(...)"
        )

    def run(self, *args: Any, **kwargs: Any) -> Any:
        return self._default_method.run(*args, **kwargs)

    def async_run(self, *args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
        return self._default_method.async_run(*args, **kwargs)

    def async_stream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Any]:
        return self._default_method.async_stream(*args, **kwargs)

    # ---- how it runs: the backend ---------------------------------------------------------------

    def init_local(self) -> Runner:
        """Instantiate the runnable here; calls then run in this process, batched like served ones."""
        with self._backend_lock:
            backend = self._backend
            if not isinstance(backend, LocalBackend):
                backend = self._backend = LocalBackend(self.spec, lazy=True)
        backend.load()
        return self

    def reconfigure(self, method: str, settings: Mapping[str, Any]) -> None:
        """New `max_batch_size` / `max_latency_ms` for a method's batch queue where it runs in this
        process (local, and embedded in the replica that calls it), effective for the next batch.
        A served runner's replicas take theirs in their deployment's `user_config`."""
        backend = self._backend
        if not (isinstance(backend, LocalBackend) and backend.loaded):
            raise InvalidArgument(
                f"runner {self.name!r} does not run in this process; a served runner takes new batch settings "
                'through its deployment\'s user_config: {"METHOD": {"max_batch_size": N, "max_latency_ms": MS}}'
            )
        backend.reconfigure(method, dict(settings))

    def destroy_local(self) -> None:
        if isinstance(self._backend, LocalBackend):
            self._backend.close()
            self._backend = None

    @property
    def is_local(self) -> bool:
        """Whether the runnable is loaded in this process (local or embedded)."""
        return isinstance(self._backend, LocalBackend) and self._backend.loaded

    @property
    def runnable_instance(self) -> Runnable | None:
        """The Runnable instance running in this process, or None."""
        return self._backend.instance if isinstance(self._backend, LocalBackend) else None

    def _running_backend(self) -> Backend:
        if self._backend is not None:  # every call but the first: no lock
            return self._backend
        with self._backend_lock:
            backend = self._backend
            if backend is None and self.embedded and in_serve_replica():
                backend = self._backend = EmbeddedBackend(self.spec)  # loads on first use, in this replica
        if backend is None:
            raise RunnerNotReady(
                f"runner {self.name!r} is not running: call runner.init_local() to run it in this process, "
                "or serve it (raystore.Service / runner.bind())"
            )
        return backend

    # ---- Serve ----------------------------------------------------------------------------------

    def bind(self) -> Runner:
        """A copy of this runner that Serve turns into handles when passed to `Deployment.bind(...)`:

            app = MyIngress.bind(runner.bind())
            # in MyIngress.__init__(self, runner): `await runner.predict.async_run(x)`

        An embedded runner's copy loads the model in that replica instead.
        """
        if self.embedded:
            backend: Backend = EmbeddedBackend(self.spec)
        else:
            backend = ServedBackend(self.spec, runner_applications(self.spec))
        return Runner._from_spec(self.spec, backend)

    def served_through(self, handle: Any) -> Runner:
        """A copy of this colocated runner that calls its one deployment, already running, through
        `handle` (a `DeploymentHandle`): how a replica reaches a runner that another application
        deployed, such as a model loaded over the V2 repository API."""
        if not self.spec.colocate:
            raise InvalidArgument(
                f"runner {self.name!r} has a deployment per method; only a colocated one has one handle"
            )
        return Runner._from_spec(self.spec, ServedBackend(self.spec, {method: handle for method in self.spec.methods}))

    def adopt(self, bound: Runner) -> None:
        """Run through the backend `bound` arrived with: the copy of this runner (from `bind()`)
        that Serve handed the replica this runner object lives in. A service's ingress does this for
        the runners its module holds, which its API functions call."""
        if bound.name != self.name:
            raise InvalidArgument(f"runner {self.name!r} cannot adopt the backend of runner {bound.name!r}")
        self._backend = bound._backend

    def __getstate__(self) -> dict[str, Any]:
        backend = self._backend
        if isinstance(backend, LocalBackend) and not isinstance(backend, EmbeddedBackend):
            backend = None  # a model loaded by init_local() stays in its process
        return {"spec": self.spec, "backend": backend}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._start(state["spec"], state["backend"])
