"""The ingress deployment of a service: it answers HTTP behind Serve's proxy with the service's
ASGI app (`ServiceApp`, given to Serve as `@serve.ingress` apps are, so that Serve's logs and
metrics see each route), with the service's runners wired to their deployments (or loaded here
when embedded)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from raystore._private.replica import HEALTH_CHECK_OPTIONS, freeze_startup_heap, limit_threads
from raystore._private.service.access_log import access_log_from_environment
from raystore._private.service.app import ServiceApp, call_api
from raystore._private.service.request_metrics import request_metrics
from raystore.exceptions import InvalidArgument

if TYPE_CHECKING:
    from raystore._private.runner.runner import Runner
    from raystore._private.service.service import Service

INGRESS_ACTOR_OPTIONS = {"num_cpus": 0.25}


class ServiceSource(Protocol):
    """A service, or what finds it in the replica (`ServiceImport`): `resolve()` gives the service."""

    def resolve(self) -> Service: ...


class ServiceIngress:
    """Hosts a service's HTTP app. APIs are also methods, for Python handle calls.

    Serve calls `__serve_build_asgi_app__` once `__init__` has wired the runners, and answers HTTP
    with the app it returns."""

    def __init__(self, source: ServiceSource, bound_runners: dict[str, Runner]):
        # By import path the API functions and `service.runners` are the module's own objects, so
        # wiring the runners below wires the runners the API functions use.
        self.service = source.resolve()
        if any(runner.embedded for runner in self.service.runners):
            # Embedded models share this replica's CPU slice with the HTTP work: size their math
            # threads to it, or idle OpenMP threads spinning for work starve the event loop.
            limit_threads(INGRESS_ACTOR_OPTIONS["num_cpus"])
        for runner in self.service.runners:
            runner.adopt(bound_runners[runner.name])
            if runner.embedded:
                runner.init_local()
        self._app = ServiceApp(
            self.service, self._ready, request_metrics(self.service.name), access_log_from_environment()
        )
        freeze_startup_heap()

    def __serve_build_asgi_app__(self) -> ServiceApp:
        return self._app

    async def _ready(self) -> bool:
        return True  # the replica exists only once __init__ wired every runner

    async def _call_api(self, name: str, value: Any) -> Any:
        return await call_api(self.service.apis[name], value)

    def reconfigure(self, config: dict[str, Any]) -> None:
        """Serve's `user_config`: batch settings for the runners embedded in this replica, by
        runner and method: `{"runners": {"iris_clf": {"predict": {"max_batch_size": 32}}}}`.
        A served runner takes its own in its deployment's `user_config`."""
        shape = 'the ingress\'s user_config is {"runners": {RUNNER: {METHOD: {"max_batch_size": N, ...}}}}'
        runners = config.get("runners") if isinstance(config, dict) else None
        if not isinstance(config, dict) or set(config) - {"runners"} or not isinstance(runners or {}, dict):
            raise InvalidArgument(f"{shape}; got {config!r}")
        embedded = {runner.name: runner for runner in self.service.runners if runner.embedded}
        for name, methods in (runners or {}).items():
            if name not in embedded:
                raise InvalidArgument(
                    f"no runner {name!r} is embedded in the ingress of {self.service.name!r} "
                    f"(embedded: {sorted(embedded)}); a served runner takes its settings in its own deployment"
                )
            if not isinstance(methods, dict):
                raise InvalidArgument(f"{shape}; runner {name!r} has {methods!r}")
            for method, settings in methods.items():
                embedded[name].reconfigure(method, settings)


def _api_method(name: str, streams: bool):
    if streams:

        async def method(self: ServiceIngress, value: Any) -> Any:  # handle.options(stream=True)
            async for piece in self.service.apis[name].func(value):
                yield piece

        method.__name__ = method.__qualname__ = name
        return method

    async def method(self: ServiceIngress, value: Any) -> Any:
        return await self._call_api(name, value)

    method.__name__ = method.__qualname__ = name
    return method


def service_application(service: Service, source: ServiceSource) -> Any:
    """The Serve application of `service`: its ingress deployment, which finds the service through
    `source`, bound to every runner's deployments."""
    from ray import serve

    if not service.apis and not service.v2:
        raise InvalidArgument(
            f"service {service.name!r} has no APIs; add one with @svc.api(...), or serve its models with v2=True"
        )
    reserved = {
        "app",
        "service",
        "docs_path",
        "reconfigure",
    }  # the ingress's own; names starting with _ never reach here
    clash = reserved & set(service.apis)
    if clash:
        raise InvalidArgument(f"API names {sorted(clash)} are reserved")
    class_name = f"{service.name.replace('-', '_')}_ingress"
    namespace = {name: _api_method(name, api.streams) for name, api in service.apis.items()}
    asgi_class = serve.ingress()(type(class_name, (ServiceIngress,), namespace))

    async def __call__(self: Any, scope: Any, receive: Any = None, send: Any = None) -> None:
        """Serve's HTTP entry point; from Python, a clear error instead of a missing argument."""
        if receive is None:
            raise InvalidArgument(
                f"service {self.service.name!r} takes HTTP requests here; from Python call an API "
                f"through the handle, e.g. handle.{next(iter(self.service.apis))}.remote(value)"
            )
        await self._asgi_app(scope, receive, send)

    ingress_class = type(class_name, (asgi_class,), {"__call__": __call__})
    deployment = serve.deployment(
        ingress_class,
        name=f"{service.name}-ingress",
        ray_actor_options=dict(INGRESS_ACTOR_OPTIONS),
        max_ongoing_requests=service.max_ongoing_requests,
        **HEALTH_CHECK_OPTIONS,
    )
    return deployment.bind(source, {runner.name: runner.bind() for runner in service.runners})
