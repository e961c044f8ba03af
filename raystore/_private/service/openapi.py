"""The OpenAPI 3 document of a service, and the Swagger UI page that renders it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from raystore._private.version import __version__

if TYPE_CHECKING:
    from raystore._private.service.service import Service

ERROR_SCHEMA = {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]}


def openapi_spec(service: Service) -> dict[str, Any]:
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
    return {
        "openapi": "3.1.0",  # 3.1: schemas are JSON Schema 2020-12, as pydantic writes them
        "info": {"title": service.name, "version": __version__, "description": f"raystore service {service.name}"},
        "paths": paths,
        "components": {"schemas": schemas},
    }


def swagger_page(title: str) -> str:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{title} - API docs</title>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({{url: "docs.json", dom_id: "#swagger-ui"}});</script>
<noscript>The OpenAPI document is at <a href="docs.json">docs.json</a>.</noscript>
</body></html>"""
