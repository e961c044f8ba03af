"""`Service`: runners plus typed HTTP APIs, declared with `@svc.api(input=..., output=...)`, and
`ServiceImport`, a service named by its import path (`service:svc`), as Serve configs name it.

The top of the service package: it imports the ingress to make its Serve application, and
nothing below imports it back (they see a service through `resolve()` and type hints).
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

from raystore._private.service.admission import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MIN_BODY_RATE,
    BodyLimits,
)
from raystore._private.service.descriptors import IODescriptor
from raystore._private.service.ingress import service_application
from raystore.exceptions import InvalidArgument
from raystore.tag import validate_serve_name

if TYPE_CHECKING:
    from raystore._private.service.v2.server import ModelRepository

_ROUTE_RE = re.compile(r"^/[A-Za-z0-9_\-./]*$")
RESERVED_ROUTES = {"/docs", "/docs.json", "/healthz", "/readyz", "/metrics", "/ui"}
DEFAULT_MAX_ONGOING_REQUESTS = 1000


@dataclass(frozen=True)
class API:
    name: str
    route: str
    input: IODescriptor
    output: IODescriptor
    func: Callable[..., Any]
    doc: str
    is_async: bool = field(init=False)  # looked up on every request: worked out once
    streams: bool = field(init=False)  # an async generator: answered piece by piece

    def __post_init__(self) -> None:
        object.__setattr__(self, "is_async", inspect.iscoroutinefunction(self.func))
        object.__setattr__(self, "streams", inspect.isasyncgenfunction(self.func))


class Service:
    """A named set of runners and HTTP APIs; served by `raystore serve MODULE:svc` or composed
    with other Serve deployments through `svc.to_app()`."""

    def __init__(
        self,
        name: str,
        runners: Sequence[Any] = (),
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
        min_body_rate: float = DEFAULT_MIN_BODY_RATE,
        max_body_bytes_in_flight: int | None = None,
        max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
        middlewares: Sequence[Any] = (),
        cors: bool | Mapping[str, Any] = False,
        v2: bool = False,
        ui: bool = True,
    ):
        """`max_body_bytes`: the largest request body (413 beyond). `body_timeout_s` and
        `min_body_rate` (bytes/s): a body must arrive within `body_timeout_s`, plus 1 s per
        `min_body_rate` bytes received, else 408, so that slow clients cannot hold the ingress's
        slots. `max_body_bytes_in_flight`: the request bytes one ingress replica holds at once
        (default 64 MiB, or `max_body_bytes` if larger); a request that would pass it is answered
        503 before its body is read. `max_ongoing_requests`: requests one ingress replica takes at
        once (Serve's deployment option). `middlewares`: Starlette (ASGI) middleware around the
        service's routes, the first outermost; each a `starlette.middleware.Middleware(cls,
        **options)` or a class that needs no options. `cors`: True answers cross-origin requests
        from any origin, a mapping sets Starlette's `CORSMiddleware` options (`allow_origins`,
        `allow_headers`, ...); CORS runs before any other middleware, so that preflight requests
        need no login. `v2`: the runners' models also answer over the Open Inference Protocol
        (KServe V2 REST, as Triton's clients speak it) under `/v2`. `ui`: the web console at `/ui`
        (read-only: the service's own models, and its runners' live batch statistics); False
        leaves it out."""
        self.name = validate_serve_name(name, "service", "the Serve application")
        self.runners = list(runners)
        names = [r.name for r in self.runners]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise InvalidArgument(f"runner names must be unique in a service; repeated: {duplicates}")
        self.body_limits = BodyLimits(max_body_bytes, body_timeout_s, min_body_rate, max_body_bytes_in_flight)
        if (
            isinstance(max_ongoing_requests, bool)
            or not isinstance(max_ongoing_requests, int)
            or max_ongoing_requests < 1
        ):
            raise InvalidArgument(f"max_ongoing_requests must be a positive int, got {max_ongoing_requests!r}")
        self.max_ongoing_requests = max_ongoing_requests
        self.middlewares: list[Middleware] = []
        for middleware in middlewares:
            self.add_asgi_middleware(middleware)
        self.cors = cors_options(cors)
        if not isinstance(v2, bool):
            raise InvalidArgument(f"v2 must be True or False, got {v2!r}")
        self.v2 = v2
        if not isinstance(ui, bool):
            raise InvalidArgument(f"ui must be True or False, got {ui!r}")
        self.ui = ui
        # The V2 repository extension (index, load, unload), where a server offers one: `raystore
        # serve --model` sets it to the store's. None: the service's own models only.
        self.v2_repository: ModelRepository | None = None
        self.apis: dict[str, API] = {}
        caller = inspect.currentframe().f_back  # type: ignore[union-attr]
        self.module = caller.f_globals.get("__name__", "__main__") if caller else "__main__"

    @property
    def max_body_bytes(self) -> int:
        return self.body_limits.max_body_bytes

    def api(
        self,
        input: IODescriptor,  # noqa: A002 - BentoML's name for it
        output: IODescriptor,
        *,
        route: str | None = None,
        name: str | None = None,
    ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Expose `func` as `POST /<route>` (default: the function's name)."""
        for what, descriptor in (("input", input), ("output", output)):
            if not isinstance(descriptor, IODescriptor):
                raise InvalidArgument(f"{what} must be an IO descriptor from raystore.io, got {descriptor!r}")

        def register(func: Callable[..., Any]) -> Callable[..., Any]:
            api_name = name or func.__name__
            if not api_name.isidentifier() or api_name.startswith("_"):
                raise InvalidArgument(
                    f"API name {api_name!r} must be a Python identifier not starting with _ (it names a handle "
                    "method; names with _ are the ingress's own)"
                )
            api_route = route or f"/{api_name}"
            if not api_route.startswith("/"):
                api_route = "/" + api_route
            if len(api_route) > 1:
                api_route = api_route.rstrip("/")  # a trailing slash is the same route (see ServiceApp)
            protocol = self.v2 and (api_route == "/v2" or api_route.startswith("/v2/"))  # the V2 routes' own
            own = (
                api_route in RESERVED_ROUTES
                or api_route.startswith("/docs/")
                or api_route.startswith("/ui/")
                or protocol
            )
            if not _ROUTE_RE.fullmatch(api_route) or own:
                raise InvalidArgument(
                    f"route {api_route!r} is invalid or reserved: a route is / and letters, digits, _-./, "
                    f"and these are the service's own: {sorted(RESERVED_ROUTES)}, anything under /docs/ and /ui/, and /v2 "
                    "with v2=True"
                )
            if api_name in self.apis or any(a.route == api_route for a in self.apis.values()):
                raise InvalidArgument(
                    f"API {api_name!r} (route {api_route}) is already defined in service {self.name!r}"
                )
            _check_streaming(api_name, func, input, output)
            self.apis[api_name] = API(api_name, api_route, input, output, func, inspect.getdoc(func) or "")
            return func

        return register

    def add_asgi_middleware(self, middleware: Any, **options: Any) -> None:
        """Add a Starlette (ASGI) middleware inside those added before, as BentoML's method of this
        name does: a middleware class and its options, or a `starlette.middleware.Middleware`."""
        if isinstance(middleware, Middleware):
            if options:
                raise InvalidArgument("give options inside Middleware(cls, **options), or pass the class with options")
            self.middlewares.append(middleware)
        elif callable(middleware):  # a class, or a factory taking the app
            self.middlewares.append(Middleware(middleware, **options))
        else:
            raise InvalidArgument(
                f"middleware must be an ASGI middleware class or starlette.middleware.Middleware(cls, ...), "
                f"got {middleware!r}"
            )

    def to_app(self, import_path: str | None = None) -> Any:
        """The Serve application: the ingress deployment bound to every runner's deployments.

        The ingress finds the service by `import_path` (or the module this service was defined in,
        when importable) so that its API functions call the runners the module holds."""
        path = import_path or import_path_of(self)
        return service_application(self, ServiceImport(path) if path else self)

    def resolve(self) -> Service:
        return self

    def __repr__(self) -> str:
        return f"Service(name={self.name!r}, runners={[r.name for r in self.runners]}, apis={list(self.apis)})"


DEFAULT_CORS = {
    "allow_origins": ["*"],
    "allow_methods": ["GET", "HEAD", "POST"],
    "allow_headers": ["*"],
    "expose_headers": ["X-Request-ID", "Retry-After"],
    "max_age": 600,
}


def _check_streaming(
    api_name: str, func: Callable[..., Any], input_descriptor: IODescriptor, output: IODescriptor
) -> None:
    """An async generator API needs an output that streams, and only it may have one (requests
    are whole bodies: an input never streams)."""
    if input_descriptor.stream is not None:
        raise InvalidArgument(
            f"API {api_name!r}: stream= is for outputs; a request arrives whole, so give its input without it"
        )
    if inspect.isgeneratorfunction(func):
        raise InvalidArgument(
            f"API {api_name!r} is a plain generator; a streaming API is an async generator (`async def` with `yield`)"
        )
    streams = inspect.isasyncgenfunction(func)
    if streams and output.stream is None:
        formats = " or ".join(f"stream={f!r}" for f in output.stream_formats) or "none (it cannot stream)"
        raise InvalidArgument(
            f"API {api_name!r} is an async generator, so it answers piece by piece: give its output a stream "
            f"format, e.g. Text(stream=True) (Server-Sent Events) or JSON(stream='jsonl'); "
            f"{type(output).__name__} takes {formats}"
        )
    if not streams and output.stream is not None:
        raise InvalidArgument(
            f"API {api_name!r} has a streaming output ({type(output).__name__}(stream={output.stream!r})) but "
            "returns one value; make it an async generator that yields the pieces, or drop stream="
        )


def cors_options(cors: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    """`CORSMiddleware`'s options for `Service(cors=...)`, or None for no CORS. Checked here, where
    a mistake is the author's, not in the replica."""
    if cors is False or cors is None:
        return None
    if cors is True:
        return dict(DEFAULT_CORS)
    if not isinstance(cors, Mapping):
        raise InvalidArgument(f"cors must be True, False or a mapping of CORSMiddleware options, got {cors!r}")
    allowed = set(inspect.signature(CORSMiddleware).parameters) - {"app"}
    unknown = sorted(set(cors) - allowed)
    if unknown:
        raise InvalidArgument(f"unknown CORS options {unknown}; CORSMiddleware takes {sorted(allowed)}")
    if not cors.get("allow_origins") and not cors.get("allow_origin_regex"):
        raise InvalidArgument("cors needs allow_origins or allow_origin_regex (cors=True allows any origin)")
    if cors.get("allow_credentials") and "*" in cors.get("allow_origins", ()):
        raise InvalidArgument(
            "cors: allow_credentials with allow_origins ['*'] would let any site send requests with your "
            "users' cookies; list the origins"
        )
    # Given options replace the defaults; the origins are never inherited from cors=True's "*".
    return {**DEFAULT_CORS, "allow_origins": [], **cors}


class ServiceImport:
    """A service by import path, `MODULE:ATTRIBUTE`: what a replica imports to get its service."""

    def __init__(self, path: str):
        self.path = path

    def resolve(self) -> Service:
        module_name, _, attribute = self.path.partition(":")
        if not module_name or not attribute:
            raise InvalidArgument(f"{self.path!r} is not MODULE:ATTRIBUTE, e.g. 'service:svc'")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise InvalidArgument(f"cannot import {module_name!r} (from {self.path!r}): {exc}") from None
        service = getattr(module, attribute, None)
        if not isinstance(service, Service):
            raise InvalidArgument(f"{self.path!r} is {type(service).__name__}, not a raystore.Service")
        return service

    def __repr__(self) -> str:
        return f"ServiceImport({self.path!r})"


def load_service(import_path: str) -> Service:
    """`module:attribute` -> the Service it names."""
    return ServiceImport(import_path).resolve()


def import_path_of(service: Service) -> str | None:
    """`module:attribute` when the service lives in an importable module (not a script's __main__)."""
    if service.module in ("__main__", "__mp_main__"):
        return None
    module = importlib.import_module(service.module)
    for attribute, value in vars(module).items():
        if value is service:
            return f"{service.module}:{attribute}"
    return None
