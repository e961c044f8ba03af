"""The Starlette app of a service: one `POST` route per API, health, readiness, OpenAPI docs,
and errors as JSON `{"error": ...}` with the status that says what went wrong."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from raystore.service.errors import HTTPError, PayloadTooLarge
from raystore.service.openapi import openapi_spec, swagger_page
from raystore.service.service import API, Service

logger = logging.getLogger("raystore.service")


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it grows past `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the body is {declared} bytes; this service accepts at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the body is over {limit} bytes, the most this service accepts")
        chunks.append(chunk)
    body = b"".join(chunks)
    request._body = body  # lets request.form() (multipart) parse what was already read
    return body


def api_endpoint(service: Service, api: API, metrics: Any = None) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        start = time.perf_counter()
        try:
            body = await read_body(request, service.max_body_bytes)
            value = await api.input.from_http(request, body)
            result = await call_api(api, value)
            response = api.output.to_http(result)
        except Exception as exc:  # every failure becomes a JSON error; the server keeps serving
            response = exception_response(api, exc)
        if metrics is not None:
            metrics.record(api.name, response.status_code, 1000 * (time.perf_counter() - start))
        return response

    return endpoint


async def call_api(api: API, value: Any) -> Any:
    if api.is_async:
        return await api.func(value)
    return await asyncio.to_thread(api.func, value)


def exception_response(api: API, exc: Exception) -> JSONResponse:
    if isinstance(exc, HTTPError):
        return error_response(exc.status_code, str(exc), exc.headers)
    retry_after = getattr(exc, "retry_after_s", None)
    if type(exc).__name__ == "ServiceUnavailable" and retry_after is not None:
        seconds = max(1, int(round(retry_after)))
        return error_response(503, f"overloaded, retry in {seconds} s: {exc}", {"Retry-After": str(seconds)})
    cause = _unwrap(exc)
    if cause is not exc:
        return exception_response(api, cause)
    logger.exception("API %s failed", api.name)
    return error_response(500, f"{type(exc).__name__} in API {api.name!r}: {exc}")


def _unwrap(exc: Exception) -> Exception:
    """Ray wraps errors raised in another replica (RayTaskError); the original is `.cause`."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, Exception) else exc


def build_asgi_app(service: Service, is_ready: Callable[[], Awaitable[bool]], metrics: Any = None) -> Starlette:
    routes = [
        Route(api.route, api_endpoint(service, api, metrics), methods=["POST"], name=api.name)
        for api in service.apis.values()
    ]
    spec = openapi_spec(service)

    async def docs_json(request: Request) -> Response:
        return Response(json.dumps(spec), media_type="application/json")

    async def docs(request: Request) -> Response:
        return HTMLResponse(swagger_page(service.name))

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await is_ready():
            return JSONResponse({"status": "ready"})
        return error_response(503, "runners are not ready yet")

    routes += [
        Route("/docs.json", docs_json, methods=["GET"]),
        Route("/docs", docs, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]

    async def not_found(request: Request, exc: Exception) -> Response:
        return error_response(404, f"no route {request.url.path}; the APIs are {sorted(a.route for a in service.apis.values())}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error_response(405, f"{request.method} is not allowed on {request.url.path}; APIs take POST")

    return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_allowed})
