"""The HTTP side of a service: one `POST` route per API, health, readiness, OpenAPI docs, and
errors as JSON `{"error": ...}` with the status that says what went wrong. Requests and responses
are Starlette's; the routing is `ServiceRouter`'s own."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from raystore._private.service.access_log import REQUEST_ID_HEADER, AccessLog, request_id
from raystore._private.service.openapi import openapi_spec, swagger_page
from raystore.exceptions import BadInput, PayloadTooLarge, RaystoreError, ServiceUnavailable

if TYPE_CHECKING:
    from raystore._private.service.service import API, Service

logger = logging.getLogger("raystore.service")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit():
        if int(declared) > limit:
            raise PayloadTooLarge(f"the body is {declared} bytes; this service accepts at most {limit}")
        return await request.body()  # the HTTP server reads no more than the declared length
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes, the most this service accepts")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # lets request.form() (multipart) parse what was already read
    return body


def api_endpoint(
    service: Service, api: API, metrics: Any = None, access_log: AccessLog | None = None
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        start = time.perf_counter()
        rid = request_id(request.headers.get(REQUEST_ID_HEADER))
        try:
            body = await read_body(request, service.max_body_bytes)
            value = await api.input.from_http(request, body)
            result = await call_api(api, value)
            response = api.output.to_http(result)
        except Exception as exc:  # every failure becomes a JSON error; the server keeps serving
            response = exception_response(api, exc, rid, access_log)
        response.headers[REQUEST_ID_HEADER] = rid
        elapsed = time.perf_counter() - start
        if metrics is not None:
            metrics.record(api.name, response.status_code, elapsed)
        if access_log is not None:
            access_log.request("POST", api.route, response.status_code, elapsed, rid)
        return response

    return endpoint


def call_api(api: API, value: Any) -> Awaitable[Any]:
    """The API function's result to await: its own coroutine, or a plain function's run on a
    thread. A plain function here, not a coroutine of its own: one frame less on every request."""
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


def exception_response(api: API, exc: Exception, rid: str = "-", access_log: AccessLog | None = None) -> JSONResponse:
    """The one place an error becomes a response. What the client got wrong (`BadInput` and its
    kin: 400, 413, 415) and an overloaded queue (`ServiceUnavailable`: 503 with `Retry-After`)
    answer with the error's own status. Anything else raised on the way is the API's failure:
    logged with its traceback and answered 500, or the 5xx status a raystore error carries."""
    cause = _unwrap(exc)
    if isinstance(cause, ServiceUnavailable):
        message = f"overloaded, retry in {cause.retry_after_header} s: {cause}"
        return error_response(cause.http_status, message, cause.http_headers())
    if isinstance(cause, BadInput):
        return error_response(cause.http_status, str(cause), cause.http_headers())
    # The wrapped error when a replica raised it: its text carries the replica's traceback.
    logger.error("API %s failed (request %s)", api.name, rid, exc_info=exc)
    if access_log is not None:
        access_log.failure(api.name, rid, "".join(traceback.format_exception(exc)))
    status = cause.http_status if isinstance(cause, RaystoreError) and cause.http_status >= 500 else 500
    return error_response(status, f"{type(cause).__name__} in API {api.name!r}: {cause}")


def _unwrap(exc: Exception) -> Exception:
    """Ray wraps errors raised in another replica (RayTaskError); the original is `.cause`."""
    while isinstance(getattr(exc, "cause", None), Exception):
        exc = exc.cause
    return exc


class ServiceRouter:
    """Answers one HTTP request of a service: the APIs (`POST`), health, readiness and the docs.

    Serve hands a plain deployment's `__call__` a Starlette `Request` and sends back the `Response`
    it returns. Routing here is one dict lookup by path; a full Starlette app behind
    `@serve.ingress` cost the replica about 6% more CPU per request in routing and middleware
    (and Serve matches every request against the app's routes again for its metrics).
    """

    def __init__(
        self,
        service: Service,
        is_ready: Callable[[], Awaitable[bool]],
        metrics: Any = None,
        access_log: AccessLog | None = None,
    ):
        self._service = service
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
            return HTMLResponse(swagger_page(service.name, f"{root_of(request)}/docs.json"))

        async def healthz(request: Request) -> Response:
            return JSONResponse({"status": "ok"})

        async def readyz(request: Request) -> Response:
            if await is_ready():
                return JSONResponse({"status": "ready"})
            return error_response(503, "runners are not ready yet")

        # path -> method -> handler
        self._routes: dict[str, dict[str, Callable[[Request], Awaitable[Response]]]] = {
            api.route: {"POST": api_endpoint(service, api, metrics, access_log)} for api in service.apis.values()
        }
        for path, handler in (("/docs.json", docs_json), ("/docs", docs), ("/healthz", healthz), ("/readyz", readyz)):
            self._routes[path] = {"GET": handler, "HEAD": handler}

    async def __call__(self, request: Request) -> Response:
        scope = request.scope
        path, root = scope["path"], scope.get("root_path", "")
        if root and path.startswith(root):  # Serve mounts the app at its route prefix
            path = path[len(root) :] or "/"
        methods = self._routes.get(path)
        if methods is None:  # with or without a trailing slash, a route is the same route
            methods = self._routes.get(path[:-1] if len(path) > 1 and path.endswith("/") else path + "/")
        if methods is None:
            routes = sorted(api.route for api in self._service.apis.values())
            return error_response(404, f"no route {path or '/'}; the APIs are {routes}")
        handler = methods.get(scope["method"])
        if handler is None:
            allowed = ", ".join(sorted(methods))
            return error_response(405, f"{scope['method']} is not allowed on {path}; use {allowed}", {"Allow": allowed})
        return await handler(request)
