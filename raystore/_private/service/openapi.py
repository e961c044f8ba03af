"""The OpenAPI 3 document of a service, and the Swagger UI page that renders it."""

from __future__ import annotations

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


def swagger_page(title: str, spec_url: str) -> str:
    """The Swagger UI page; `spec_url` is absolute, so the page works at `/docs` and `/docs/` alike."""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - API docs</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "{spec_url}", dom_id: "#swagger-ui"}});</script>
<noscript>The OpenAPI document is at <a href="{spec_url}">{spec_url}</a>.</noscript>
</body></html>"""
