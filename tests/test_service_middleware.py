"""Starlette middleware and CORS around a service's routes, served by `raystore serve` and asked
over real HTTP: a CORS preflight passes before the API key is asked for, the key guards the APIs,
a request/response middleware marks every answer, and a middleware that fails is one 500 with its
request id, its traceback on the console."""

from __future__ import annotations

import json
import re
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from guarded_service import API_KEY, ORIGIN
from serving import raystore_serve

import raystore
from raystore.exceptions import InvalidArgument

TESTS = Path(__file__).parent


def _ask(port: int, path: str, method: str = "POST", body: bytes | None = b"Ada", headers: dict | None = None):
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=body if method == "POST" else None,
        headers={"Content-Type": "text/plain", **(headers or {})},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


def test_cors_api_key_and_response_middleware_over_http(subprocess_env):
    key = {"Authorization": f"Bearer {API_KEY}"}
    with raystore_serve(subprocess_env, "guarded_service:svc", TESTS) as (server, port):
        # The browser's preflight carries no credentials: CORS answers it before the key check.
        preflight = {
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        }
        status, headers, _ = _ask(port, "/greet", "OPTIONS", headers=preflight)
        assert status == 200 and headers["access-control-allow-origin"] == ORIGIN
        assert "POST" in headers["access-control-allow-methods"]
        assert "authorization" in headers["access-control-allow-headers"].lower()
        status, headers, _ = _ask(port, "/greet", "OPTIONS", headers={**preflight, "Origin": "https://evil.example"})
        assert status == 400 and "access-control-allow-origin" not in headers

        status, headers, body = _ask(port, "/greet", headers={"Origin": ORIGIN})
        assert status == 401 and json.loads(body) == {"error": "missing or wrong API key"}
        assert headers["access-control-allow-origin"] == ORIGIN  # the browser may read the refusal
        refused_id = headers["X-Request-ID"]

        status, _, body = _ask(port, "/greet/")  # the same route: the middleware guards it too
        assert status == 401 and json.loads(body) == {"error": "missing or wrong API key"}

        status, headers, body = _ask(port, "/greet", headers={**key, "Origin": ORIGIN, "X-Request-ID": "greet-1"})
        assert status == 200 and json.loads(body) == {"hello": "Ada"}
        assert headers["X-Served-By"] == "guarded" and headers["X-Request-ID"] == "greet-1"
        assert "X-Request-ID" in headers["access-control-expose-headers"]

        status, headers, body = _ask(port, "/healthz", "GET")  # no key needed: the middleware guards POST
        assert status == 200 and headers["X-Served-By"] == "guarded"

        status, headers, body = _ask(port, "/explode", headers={**key, "X-Request-ID": "boom-1"})
        assert status == 500 and "RuntimeError: the middleware broke" in json.loads(body)["error"]
        assert headers["X-Request-ID"] == "boom-1"

        time.sleep(1)  # log lines are datagrams: give the last ones a moment
        server.send_signal(signal.SIGINT)
        server.wait(timeout=60)
        console = server.stderr.read().decode()
    assert re.search(rf"POST /greet 401 [0-9.]+ms request_id={refused_id}", console), console
    assert re.search(r"POST /greet 200 [0-9.]+ms request_id=greet-1", console), console
    assert re.search(r"OPTIONS /greet 200 [0-9.]+ms", console), console
    assert "GET /healthz" not in console  # passing health checks are not logged
    assert "POST /explode failed, request_id=boom-1" in console and "RuntimeError: the middleware broke" in console
    assert re.search(r"POST /explode 500 [0-9.]+ms request_id=boom-1", console), console


def test_middleware_and_cors_mistakes_are_the_authors_and_said_at_once():
    class NotMiddleware:
        pass

    with pytest.raises(InvalidArgument, match="unknown CORS options \\['allow_origin'\\]"):
        raystore.Service("typo", cors={"allow_origin": ["https://a.example"]})
    with pytest.raises(InvalidArgument, match="cors must be True, False or a mapping"):
        raystore.Service("wrong", cors="https://a.example")
    with pytest.raises(InvalidArgument, match="must be an ASGI middleware class"):
        raystore.Service("number", middlewares=[42])
    with pytest.raises(InvalidArgument, match="cors needs allow_origins or allow_origin_regex"):
        raystore.Service("no-origins", cors={"allow_credentials": True})
    with pytest.raises(InvalidArgument, match="allow_credentials with allow_origins"):
        raystore.Service("any-origin-cookies", cors={"allow_origins": ["*"], "allow_credentials": True})
    regex = raystore.Service("regex", cors={"allow_origin_regex": r"https://.*\.example", "allow_credentials": True})
    assert regex.cors["allow_origins"] == [] and regex.cors["allow_methods"] == ["GET", "HEAD", "POST"]
    svc = raystore.Service("fine", middlewares=[NotMiddleware], cors=True)
    assert svc.cors["allow_origins"] == ["*"] and [m.cls for m in svc.middlewares] == [NotMiddleware]
    with pytest.raises(InvalidArgument, match="not starting with _"):
        svc.api(input=raystore.io.Text(), output=raystore.io.Text(), name="_set_asgi_app")(str.upper)
    with pytest.raises(InvalidArgument, match="reserved"):
        svc.api(input=raystore.io.Text(), output=raystore.io.Text(), route="/docs/mine", name="mine")(str.upper)


def _asgi_post(app, path: str, body: bytes = b"x") -> tuple[int, bytes]:
    """One POST through an ASGI app in this process: (status, body)."""
    import asyncio

    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"text/plain"), (b"x-request-id", b"line\nbreak")],
    }
    asyncio.run(app(scope, receive, send))
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


def test_metrics_see_the_api_behind_a_middleware_that_copies_the_scope():
    from raystore._private.service.app import ServiceApp

    class CopiesScope:
        def __init__(self, app):
            self.app = app

        async def __call__(self, scope, receive, send):
            await self.app(dict(scope), receive, send)

    class Recorded:
        def __init__(self):
            self.calls = []

        def record(self, api, status, duration_s):
            self.calls.append((api, status))

    svc = raystore.Service("copies", middlewares=[CopiesScope])
    svc.api(input=raystore.io.Text(), output=raystore.io.Text(), name="shout")(str.upper)
    metrics = Recorded()

    async def ready():
        return True

    app = ServiceApp(svc, ready, metrics)
    assert _asgi_post(app, "/shout", b"hey") == (200, b"HEY")
    assert _asgi_post(app, "/shout/", b"hey") == (200, b"HEY")  # the same route
    assert _asgi_post(app, "/nope")[0] == 404
    assert metrics.calls == [("shout", 200), ("shout", 200)]  # the 404 reached no API


def test_the_console_keeps_a_client_path_on_one_line():
    from raystore._private.deploy.local import ConsoleLog

    console = ConsoleLog()
    try:
        record = {"kind": "request", "method": "GET", "path": "/x\n2030 POST /forged 200", "status": 404}
        line = console.format({**record, "duration_ms": 1.0, "request_id": "r", "time": 0})
    finally:
        console.close()
    assert "\n" not in line and "/x\\n2030" in line
