"""The ingress deployment of a service: it answers HTTP behind Serve's proxy (a plain `__call__`
deployment, see `ServiceRouter`), with the service's runners wired to their deployments (or loaded
here when embedded)."""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from starlette.requests import Request

from raystore.exceptions import InvalidArgument
from raystore.service.service import Service

INGRESS_OPTIONS = {"ray_actor_options": {"num_cpus": 0.25}, "max_ongoing_requests": 1000}


def load_service(import_path: str) -> Service:
    """`module:attribute` -> the Service it names."""
    module_name, _, attribute = import_path.partition(":")
    if not module_name or not attribute:
        raise InvalidArgument(f"{import_path!r} is not MODULE:ATTRIBUTE, e.g. 'service:svc'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise InvalidArgument(f"cannot import {module_name!r} (from {import_path!r}): {exc}") from None
    service = getattr(module, attribute, None)
    if not isinstance(service, Service):
        raise InvalidArgument(f"{import_path!r} is {type(service).__name__}, not a raystore.Service")
    return service


def import_path_of(service: Service) -> str | None:
    """`module:attribute` when the service lives in an importable module (not a script's __main__)."""
    if service.module in ("__main__", "__mp_main__"):
        return None
    module = importlib.import_module(service.module)
    for attribute, value in vars(module).items():
        if value is service:
            return f"{service.module}:{attribute}"
    return None


class ServiceIngress:
    """Hosts a service's HTTP app. APIs are also methods, for Python handle calls."""

    def __init__(self, service: Service | str, bound_runners: dict[str, Any]):
        # By import path the API functions and `service.runners` are the module's own objects, so
        # wiring the runners below wires the runners the API functions use.
        self.service = load_service(service) if isinstance(service, str) else service
        if any(runner.embedded for runner in self.service.runners):
            from raystore.runner.deployment import limit_threads

            # Embedded models share this replica's CPU slice with the HTTP work: size their math
            # threads to it, or idle OpenMP threads spinning for work starve the event loop.
            limit_threads(INGRESS_OPTIONS["ray_actor_options"]["num_cpus"])
        for runner in self.service.runners:
            bound = bound_runners[runner.name]
            if runner.embedded:
                runner.init_local()
            else:
                runner._handles = dict(bound._handles)

        from raystore.service.app import ServiceRouter
        from raystore.service.metrics import request_metrics

        self._router = ServiceRouter(self.service, self._ready, request_metrics(self.service.name))
        from raystore.runner.deployment import freeze_startup_heap

        freeze_startup_heap()

    async def __call__(self, request: Any) -> Any:
        """Serve's HTTP entry point: one request in, one response out."""
        if not isinstance(request, Request):
            raise InvalidArgument(
                f"service {self.service.name!r} takes HTTP requests here; from Python call an API "
                f"through the handle, e.g. handle.{next(iter(self.service.apis))}.remote(value)"
            )
        return await self._router(request)

    async def _ready(self) -> bool:
        return True  # the replica exists only once __init__ wired every runner

    async def _call_api(self, name: str, value: Any) -> Any:
        from raystore.service.app import call_api

        return await call_api(self.service.apis[name], value)


def _api_method(name: str):
    async def method(self: ServiceIngress, value: Any) -> Any:
        return await self._call_api(name, value)

    method.__name__ = method.__qualname__ = name
    return method


def service_application(service: Service, import_path: str | None = None) -> Any:
    from ray import serve

    if not service.apis:
        raise InvalidArgument(f"service {service.name!r} has no APIs; add one with @svc.api(...)")
    reserved = {"__init__", "__call__", "_ready", "_call_api", "_router", "service"}
    clash = reserved & set(service.apis)
    if clash:
        raise InvalidArgument(f"API names {sorted(clash)} are reserved")
    namespace = {name: _api_method(name) for name in service.apis}
    ingress_class = type(f"{service.name.replace('-', '_')}_ingress", (ServiceIngress,), namespace)
    deployment = serve.deployment(ingress_class, name=f"{service.name}-ingress", **INGRESS_OPTIONS)
    target = import_path or import_path_of(service) or service
    return deployment.bind(target, {runner.name: runner.bind() for runner in service.runners})
