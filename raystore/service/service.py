"""`Service`: runners plus typed HTTP APIs, declared with `@svc.api(input=..., output=...)`."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from raystore.exceptions import InvalidArgument
from raystore.service.io import IODescriptor

_NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?$")
_ROUTE_RE = re.compile(r"^/[A-Za-z0-9_\-./]*$")
RESERVED_ROUTES = {"/docs", "/docs.json", "/healthz", "/readyz", "/metrics"}
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True)
class API:
    name: str
    route: str
    input: IODescriptor
    output: IODescriptor
    func: Callable[..., Any]
    doc: str
    is_async: bool = field(init=False)  # looked up on every request: worked out once

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.func))


class Service:
    """A named set of runners and HTTP APIs; served by `raystore serve MODULE:svc` or composed
    with other Serve deployments through `svc.to_app()`."""

    def __init__(self, name: str, runners: Sequence[Any] = (), *, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES):
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            raise InvalidArgument(
                f"service name {name!r} must be lowercase letters, digits, '-' and '_', starting and ending "
                "with a letter or digit (it names the Serve application)"
            )
        self.name = name
        self.runners = list(runners)
        names = [r.name for r in self.runners]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidArgument(f"runner names must be unique in a service; repeated: {duplicates}")
        if not isinstance(max_body_bytes, int) or max_body_bytes < 1:
            raise InvalidArgument(f"max_body_bytes must be a positive int, got {max_body_bytes!r}")
        self.max_body_bytes = max_body_bytes
        self.apis: dict[str, API] = {}
        caller = inspect.currentframe().f_back  # type: ignore[union-attr]
        self.module = caller.f_globals.get("__name__", "__main__") if caller else "__main__"

    def api(self, input: IODescriptor, output: IODescriptor, *, route: str | None = None,  # noqa: A002
            name: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Expose `func` as `POST /<route>` (default: the function's name)."""
        for what, descriptor in (("input", input), ("output", output)):
            if not isinstance(descriptor, IODescriptor):
                raise InvalidArgument(f"{what} must be an IO descriptor from raystore.io, got {descriptor!r}")

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            api_name = name or func.__name__
            if not api_name.isidentifier():
                raise InvalidArgument(f"API name {api_name!r} must be a Python identifier (it names a handle method)")
            api_route = route or f"/{api_name}"
            if not api_route.startswith("/"):
                api_route = "/" + api_route
            if not _ROUTE_RE.fullmatch(api_route) or api_route in RESERVED_ROUTES:
                raise InvalidArgument(f"route {api_route!r} is invalid or reserved ({sorted(RESERVED_ROUTES)})")
            if api_name in self.apis or any(a.route == api_route for a in self.apis.values()):
                raise InvalidArgument(f"API {api_name!r} (route {api_route}) is already defined in service {self.name!r}")
            self.apis[api_name] = API(api_name, api_route, input, output, func, inspect.getdoc(func) or "")
            return func

        return register

    def to_app(self, import_path: str | None = None) -> Any:
        """The Serve application: the ingress deployment bound to every runner's deployments."""
        from raystore.service.ingress import service_application

        return service_application(self, import_path)

    def __repr__(self) -> str:
        return f"Service(name={self.name!r}, runners={[r.name for r in self.runners]}, apis={list(self.apis)})"
