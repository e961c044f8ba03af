"""The OpenAPI 3 document of a service, and the Swagger UI page that renders it (Swagger UI's files
ship in `swagger_ui/`: the page needs no internet)."""

from __future__ import annotations

import functools
import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raystore._private.version import __version__

if TYPE_CHECKING:
    from raystore._private.service.service import Service

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def openapi_spec(service: Service, root_path: str = "") -> dict[str, Any]:
    """The document; mounted under a route prefix (`root_path`), its `servers` says so, so that
    "Try it out" calls `/iris/classify`, not `/classify`."""
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}

    def content(descriptor: Any) -> dict[str, Any]:
        body = descriptor.openapi_content()
        for media in body.values():
            schemas.update(media.get("schema", {}).pop("$defs", {}))
            stream = media.get("x-raystore-stream")
            if stream is not None:  # a streamed output's piece schema: its definitions go there too
                schemas.update(stream["itemSchema"].pop("$defs", {}))
        return body

    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    paths: dict[str, Any] = {}
    for api in service.apis.values():
        paths[api.route] = {
            "post": {
                "operationId": api.name,
                "summary": api.doc.splitlines()[0] if api.doc else api.name,
                "description": api.doc,
                "requestBody": {"required": True, "content": content(api.input)},
                "responses": {
                    "200": {"description": "Success", "content": content(api.output)},
                    "400": {"description": "Bad input", **error},
                    "413": {"description": "Body too large", **error},
                    "415": {"description": "Unsupported content type", **error},
                    "500": {"description": "Error in the API", **error},
                    "503": {"description": "Overloaded; retry after the Retry-After header", **error},
                },
            }
        }
    for path, summary in (("/healthz", "Liveness"), ("/readyz", "Readiness: all runners can serve")):
        paths[path] = {
            "get": {
                "summary": summary,
                "operationId": path.strip("/"),
                "responses": {"200": {"description": "OK"}, "503": {"description": "Not ready", **error}},
            }
        }
    spec: dict[str, Any] = {
        "openapi": "3.1.0",  # 3.1: schemas are JSON Schema 2020-12, as pydantic writes them
        "info": {"title": service.name, "version": __version__, "description": f"raystore service {service.name}"},
        "paths": paths,
        "components": {"schemas": schemas},
    }
    if root_path:
        spec["servers"] = [{"url": root_path}]
    return spec


SWAGGER_UI_VERSION = "5.35.0"  # the files in swagger_ui/, from npm's swagger-ui-dist
SWAGGER_UI_FILES = {  # what /docs/assets/ serves, and nothing else
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon-32x32.png": "image/png",
    "LICENSE": "text/plain; charset=utf-8",
    "NOTICE": "text/plain; charset=utf-8",
    "swagger-ui-bundle.js.LICENSE.txt": "text/plain; charset=utf-8",
}
_SWAGGER_UI_DIR = Path(__file__).with_name("swagger_ui")


def swagger_asset(name: str) -> tuple[bytes, str] | None:
    """A Swagger UI file shipped with raystore and its media type, or None for any other name."""
    media_type = SWAGGER_UI_FILES.get(name)
    if media_type is None:
        return None  # checked before the cache: a client asking for made-up names grows nothing
    return _read_asset(name), media_type


@functools.cache
def _read_asset(name: str) -> bytes:
    return (_SWAGGER_UI_DIR / name).read_bytes()


def swagger_page(title: str, root_path: str) -> str:
    """The Swagger UI page. Its URLs are absolute (under the route prefix `root_path`), so the page
    works at `/docs` and `/docs/` alike; its files come from this service, not from the internet."""
    assets = f"{root_path}/docs/assets"
    spec_url = f"{root_path}/docs.json"
    title = html.escape(title)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - API docs</title>
<link rel="icon" type="image/png" href="{assets}/favicon-32x32.png">
<link rel="stylesheet" href="{assets}/swagger-ui.css?v={SWAGGER_UI_VERSION}"></head>
<body><div id="swagger-ui"></div>
<script src="{assets}/swagger-ui-bundle.js?v={SWAGGER_UI_VERSION}"></script>
<script>window.ui = SwaggerUIBundle({{url: "{spec_url}", dom_id: "#swagger-ui"}});</script>
<noscript>The OpenAPI document is at <a href="{spec_url}">{spec_url}</a>.</noscript>
</body></html>"""
