"""The HTTP side of a service, an ASGI app (`ServiceApp`): one `POST` route per API, health,
readiness, OpenAPI docs, the service's middleware, and errors as JSON `{"error": ...}` with the
status that says what went wrong. Requests, responses, routing and middleware are Starlette's."""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router, get_route_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocketClose

from raystore._private.runner.served import remote_cause
from raystore._private.service.access_log import REQUEST_ID_KEY, AccessLog, request_id
from raystore._private.service.admission import Admission
from raystore._private.service.openapi import openapi_spec, swagger_asset, swagger_page
from raystore._private.service.streams import NOTHING, streamed_response
from raystore._private.service.v2.server import V2Routes
from raystore.exceptions import BadInput, InvalidArgument, NotFound, QueueFull, RaystoreError, ServiceUnavailable

if TYPE_CHECKING:
    from raystore._private.service.service import API, Service

logger = logging.getLogger("raystore.service")
API_SLOT = "raystore.api"  # where the ASGI scope holds a one-item list: the API the router found
CLIENT_CLOSED = 499  # nginx's status for a client that closed the connection before the answer
V2_API = "v2"  # how the admission's overload hints and the access log name the V2 infer route


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def api_endpoint(
    service: Service, api: API, access_log: AccessLog | None = None, admission: Admission | None = None
) -> Callable[[Request], Awaitable[Response]]:
    """The function that answers one API request: body (admitted by the replica's `Admission`),
    input descriptor, the API function, output descriptor, and any error as its JSON response."""
    gate = admission if admission is not None else Admission(service.body_limits)

    async def endpoint(request: Request) -> Response:
        reserved = -1  # no body admitted yet
        try:
            body, reserved = await gate.read(request, api.name)
            value = await api.input.from_http(request, body)
            if api.streams:
                pieces = api.func(value)
                first = await anext(pieces, NOTHING)  # an error before the first piece keeps its status
                return streamed_response(api.output, first, pieces, api.name)
            if api.is_async:
                result = await api.func(value)
            else:
                work = asyncio.ensure_future(_in_thread(api.func, value))
                try:
                    result = await asyncio.shield(work)
                except asyncio.CancelledError:
                    if reserved > 0 and not work.done():
                        # The thread goes on with the parsed value: its bytes stay counted until it ends.
                        work.add_done_callback(functools.partial(_release_when_done, gate, reserved))
                        reserved = 0
                    raise
            return api.output.to_http(result)
        except Exception as exc:  # every failure becomes a JSON error; the server keeps serving
            if reserved >= 0:
                cause = remote_cause(exc)
                if isinstance(cause, QueueFull):  # a runner's batch queue is full: shed before parsing
                    gate.note_overloaded(api.name, cause.retry_after_s)
            rid = request.scope.get(REQUEST_ID_KEY, "-")
            return exception_response(api.name, exc, rid, access_log)
        finally:
            if reserved > 0:
                gate.release(reserved)

    return endpoint


def v2_infer_endpoint(
    v2: V2Routes, access_log: AccessLog | None, admission: Admission
) -> Callable[[Request], Awaitable[Response]]:
    """The Open Inference Protocol's infer route: its body admitted as an API's is, errors as the
    protocol wants them (`{"error": ...}`; 404 for an unknown model, version or signature)."""

    async def endpoint(request: Request) -> Response:
        reserved = -1
        model = request.path_params.get("name", "?")
        try:
            body, reserved = await admission.read(request, V2_API)
            return await v2.infer(request, body)
        except Exception as exc:
            cause = remote_cause(exc)
            if isinstance(cause, NotFound):
                return error_response(404, str(cause))
            if reserved >= 0 and isinstance(cause, QueueFull):
                admission.note_overloaded(V2_API, cause.retry_after_s)
            rid = request.scope.get(REQUEST_ID_KEY, "-")
            return exception_response(f"v2:{model}", exc, rid, access_log)
        finally:
            if reserved > 0:
                admission.release(reserved)

    return endpoint


def _release_when_done(gate: Admission, reserved: int, work: asyncio.Future) -> None:
    gate.release(reserved)
    if not work.cancelled():
        work.exception()  # retrieved: the client that wanted it is gone, nothing to log


def call_api(api: API, value: Any) -> Awaitable[Any]:
    """The API function's result to await: its own coroutine, or a plain function's run on a
    thread. A plain function here, not a coroutine of its own: one frame less on every request.
    (A streaming API is an async generator: its endpoint and handle method iterate over it.)"""
    if api.streams:
        raise InvalidArgument(
            f"API {api.name!r} streams; call it with handle.options(stream=True).{api.name}.remote(value)"
        )
    if api.is_async:
        return api.func(value)
    return _in_thread(api.func, value)


async def _in_thread(func: Callable[[Any], Any], value: Any) -> Any:
    """A plain function's result, run off the event loop; if it hands back an awaitable (say the API
    function is `runner.predict.async_run` itself, a plain function returning a coroutine), await it."""
    result = await asyncio.to_thread(func, value)
    if inspect.isawaitable(result):
        result = await result
    return result


def exception_response(
    api_name: str, exc: Exception, rid: str = "-", access_log: AccessLog | None = None
) -> JSONResponse:
    """The one place an error becomes a response. What the client got wrong (`BadInput` and its
    kin: 400, 413, 415) and an overloaded queue (`ServiceUnavailable`: 503 with `Retry-After`)
    answer with the error's own status. Anything else raised on the way is the API's failure:
    logged with its traceback and answered 500, or the 5xx status a raystore error carries."""
    cause = remote_cause(exc)
    if isinstance(cause, ClientDisconnect):  # nobody to answer: one access-log line (499), no traceback
        return error_response(CLIENT_CLOSED, "the client closed the connection before the answer")
    if isinstance(cause, ServiceUnavailable):
        message = f"overloaded, retry in {cause.retry_after_header} s: {cause}"
        return error_response(cause.http_status, message, cause.http_headers())
    if isinstance(cause, BadInput):
        return error_response(cause.http_status, str(cause), cause.http_headers())
    # The wrapped error when a replica raised it: its text carries the replica's traceback.
    logger.error("API %s failed (request %s)", api_name, rid, exc_info=exc)
    if access_log is not None:
        access_log.failure(rid, "".join(traceback.format_exception(exc)), api=api_name)
    status = cause.http_status if isinstance(cause, RaystoreError) and cause.http_status >= 500 else 500
    return error_response(status, f"{type(cause).__name__} in API {api_name!r}: {cause}")


class _Endpoint:
    """An API endpoint as the ASGI app of its route. An object, not a function: Starlette takes a
    function for `request -> response` and wraps it in an exception-handling layer this endpoint,
    which turns every error into its response, has no use for."""

    __slots__ = ("endpoint",)

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]):
        self.endpoint = endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.endpoint(Request(scope, receive))
        await response(scope, receive, send)


class _Route(Route):
    """A Starlette route whose 405 is a JSON error like every other error of the service; an API's
    route knows its API, for the metrics."""

    def __init__(self, path: str, endpoint: Callable[..., Any], *, methods: list[str], api: API | None = None):
        super().__init__(path, endpoint, methods=methods, name=api.name if api else None)
        self.api = api

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.methods and scope["method"] not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            message = f"{scope['method']} is not allowed on {self.path}; use {allowed}"
            await error_response(405, message, {"Allow": allowed})(scope, receive, send)
        else:
            slot = scope.get(API_SLOT)
            if slot is not None:  # the slot, not the scope: a middleware may have passed on a copy
                slot[0] = self.api
            await self.app(scope, receive, send)


class ServiceApp:
    """A service's HTTP side as an ASGI app: the service's middleware (CORS first, when enabled)
    around a Starlette `Router` that has one `POST` route per API, the docs, health and readiness.

    Around all of it, one layer finds each request's id (`X-Request-ID`, which Serve sets and
    returns), counts the API requests and writes the access log, whatever answered them: a route,
    a 404, or a middleware (CORS preflight, a refused login). Serve reads `routes` and `router` (as it does
    for FastAPI and Starlette apps) to label its own logs and metrics with the route's path.
    """

    def __init__(
        self,
        service: Service,
        is_ready: Callable[[], Awaitable[bool]],
        metrics: Any = None,
        access_log: AccessLog | None = None,
    ):
        self._service = service
        self._metrics = metrics
        self._access_log = access_log
        documents: dict[str, bytes] = {}  # root path (the route prefix) -> the OpenAPI document

        def root_of(request: Request) -> str:
            return request.scope.get("root_path", "").rstrip("/")

        async def docs_json(request: Request) -> Response:
            root = root_of(request)
            document = documents.get(root)
            if document is None:
                document = documents[root] = json.dumps(openapi_spec(service, root)).encode()
            return Response(document, media_type="application/json")

        async def docs(request: Request) -> Response:
            return HTMLResponse(swagger_page(service.name, root_of(request)))

        async def docs_asset(request: Request) -> Response:
            name = request.path_params["name"]
            asset = swagger_asset(name)
            if asset is None:
                return error_response(404, f"no file {name!r} in the docs' assets")
            content, media_type = asset
            return Response(content, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def readyz(request: Request) -> Response:
            if await is_ready():
                return JSONResponse({"status": "ready"})
            return error_response(503, "runners are not ready yet")

        admission = Admission(service.body_limits)  # one per replica: the bytes it holds are its own
        # The APIs first: the router tries routes in order, and they get the traffic.
        routes: list[BaseRoute] = [
            _Route(api.route, _Endpoint(api_endpoint(service, api, access_log, admission)), methods=["POST"], api=api)
            for api in service.apis.values()
        ]
        if service.v2:
            v2 = V2Routes(service, is_ready)
            infer = _Endpoint(v2_infer_endpoint(v2, access_log, admission))
            routes.extend(_Route(path, infer, methods=["POST"]) for path in v2.INFER_PATHS)
            routes.extend(_Route(path, _Endpoint(handler), methods=[method]) for method, path, handler in v2.routes())

        async def console_root(request: Request) -> Response:
            return RedirectResponse(f"{root_of(request)}/ui/", status_code=307)

        pages = [("/ui", console_root)] if service.ui else []
        for path, handler in (
            *pages,
            ("/docs.json", docs_json),
            ("/docs", docs),
            ("/docs/assets/{name}", docs_asset),
            ("/healthz", healthz),
            ("/readyz", readyz),
        ):
            routes.append(_Route(path, _Endpoint(handler), methods=["GET"]))  # HEAD comes with GET
        if service.ui:
            routes.append(Mount("/ui", app=_Console(service)))
        self.router = Router(routes, redirect_slashes=False, default=self._not_found)
        self.routes = self.router.routes
        self._stack: ASGIApp = self.router
        for middleware in reversed(service.middlewares):
            cls, args, kwargs = middleware
            self._stack = cls(self._stack, *args, **kwargs)
        if service.cors is not None:
            self._stack = CORSMiddleware(self._stack, **service.cors)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan: the router and the middleware have their say
            await self._stack(scope, receive, send)
            return
        start = time.perf_counter()
        rid = _request_id_of(scope)
        scope[REQUEST_ID_KEY] = rid
        api_slot: list[API | None] = [None]  # the API the router found, if any
        scope[API_SLOT] = api_slot
        path = scope["path"]
        root = scope.get("root_path", "")
        if path.endswith("/") and len(path) > 1 and path != root + "/" and not path.startswith(root + "/ui/"):
            # With or without a trailing slash a route is the same route, for the middleware too
            # (routes are declared without one). Starlette would answer a 307 instead, which curl
            # and urllib do not follow for a POST.
            scope["path"] = path.rstrip("/") or "/"
        status = 0  # no answer yet

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._stack(scope, receive, send_with_status)
        except Exception as exc:  # a middleware failed: the client still gets an answer
            logger.error("%s %s failed (request %s)", scope["method"], scope["path"], rid, exc_info=exc)
            if self._access_log is not None:
                text = "".join(traceback.format_exception(exc))
                self._access_log.failure(rid, text, request=f"{scope['method']} {scope['path']}")
            if status != 0:
                raise  # half an answer went out: Serve ends the connection
            status = 500
            await error_response(500, f"{type(exc).__name__}: {exc}")(scope, receive, send)
        finally:
            if status == 0:
                status = CLIENT_CLOSED  # cancelled before any answer: the client went away
            elapsed = time.perf_counter() - start
            api = api_slot[0]
            if api is not None and self._metrics is not None:
                self._metrics.record(api.name, status, elapsed)
            if self._access_log is not None and (api is not None or status >= 300 or not _is_probe(scope)):
                self._access_log.request(scope["method"], scope["path"], status, elapsed, rid)

    async def _not_found(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # a websocket: this service has none
            await WebSocketClose()(scope, receive, send)
            return
        routes = sorted(api.route for api in self._service.apis.values())
        path = get_route_path(scope) or "/"
        await error_response(404, f"no route {path}; the APIs are {routes}")(scope, receive, send)


class _Console:
    """The web console at `/ui`, read-only: the service's own models (from the store they come
    from; no downloads: a service's clients get its APIs, not its files), and a page of its
    runners with their live batch statistics. Made on its first request: a service nobody looks
    at pays nothing for it."""

    def __init__(self, service: Service):
        self._service = service
        self._app: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._app is None:
            from raystore._private.console.app import console_app
            from raystore._private.service.status import service_status
            from raystore._private.store import default_store

            service = self._service
            self._app = console_app(
                default_store(),
                title=f"{service.name} console",
                service=(service.name, lambda: service_status(service)),
                only_models={model.tag.name for runner in service.runners for model in runner.models},
                files=False,
            )
        await self._app(scope, receive, send)


def _request_id_of(scope: Scope) -> str:
    for key, value in scope["headers"]:
        if key == b"x-request-id":
            return request_id(value.decode("latin-1"))
    return request_id(None)


def _is_probe(scope: Scope) -> bool:
    """A health or readiness check: not worth a log line while it passes."""
    return get_route_path(scope) in ("/healthz", "/readyz")
