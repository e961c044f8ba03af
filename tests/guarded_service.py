"""A service behind Starlette middleware: CORS for one origin, an API key on the APIs, and a
header added to every response (imported by the ingress replica)."""

from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.responses import JSONResponse

import raystore
from raystore.io import JSON, Text

ORIGIN = "https://app.example"
API_KEY = "s3cret"


class RequireApiKey:
    """Pure ASGI middleware guarding paths: the APIs need `Authorization: Bearer KEY`; docs and
    health don't."""

    def __init__(self, app, key: str, paths: tuple[str, ...]):
        self.app = app
        self.key = f"Bearer {key}".encode()
        self.paths = paths

    async def __call__(self, scope, receive, send):
        guarded = scope["type"] == "http" and scope["path"] in self.paths
        if guarded and dict(scope["headers"]).get(b"authorization") != self.key:
            response = JSONResponse({"error": "missing or wrong API key"}, status_code=401)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ServedBy(BaseHTTPMiddleware):
    """Starlette's request/response middleware: a header on every answer."""

    async def dispatch(self, request, call_next):
        response = await call_next(request)
        response.headers["X-Served-By"] = "guarded"
        return response


class Broken:
    """Fails on one path, to show what a failing middleware's client and log get."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].endswith("/explode"):
            raise RuntimeError("the middleware broke")
        await self.app(scope, receive, send)


svc = raystore.Service(
    "guarded",
    middlewares=[Middleware(RequireApiKey, key=API_KEY, paths=("/greet", "/explode")), ServedBy],
    cors={"allow_origins": [ORIGIN]},
)
svc.add_asgi_middleware(Broken)


@svc.api(input=Text(), output=JSON())
def greet(name: str) -> dict:
    return {"hello": name}


@svc.api(input=Text(), output=Text())
def explode(text: str) -> str:
    return text
