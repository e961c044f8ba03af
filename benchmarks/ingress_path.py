"""Benchmark: the CPU a service's HTTP path costs inside its ingress replica, in process, without
Ray: raystore's `ServiceApp` (routing, middleware stack, request id, metrics hook, descriptors)
against a hand-written ASGI app that parses the same JSON with the same orjson and answers the
same array, the least any Python ingress does.

    .venv/bin/python benchmarks/ingress_path.py [--requests 20000] [--repeats 7]

Each variant runs `--repeats` times `--requests` requests, interleaved; the table gives the
fastest repeat per variant (the least disturbed by the machine) in microseconds per request and
its ratio to the baseline. "+ Serve's route match" adds the matching Serve does on every request
to label its logs and metrics with the route (as it does for any ASGI ingress). No timing
assertions: run by hand on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np
import orjson
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware

import raystore
from raystore._private.service.app import ServiceApp
from raystore.io import NumpyNdarray

BODY = b"[[5.9, 3.0, 5.1, 1.8]]"
HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"content-type", b"application/json"),
    (b"content-length", str(len(BODY)).encode()),
    (b"x-request-id", b"0123456789abcdef0123456789abcdef"),
]


def make_service(name: str, **options) -> raystore.Service:
    svc = raystore.Service(name, **options)

    @svc.api(input=NumpyNdarray(dtype="float32"), output=NumpyNdarray())
    async def predict(x: np.ndarray) -> np.ndarray:
        return x

    for i in range(3):  # a few more APIs, as a real service has; `predict` is matched first
        svc.api(input=NumpyNdarray(), output=NumpyNdarray(), name=f"other{i}")(predict)
    return svc


async def baseline_app(scope, receive, send) -> None:
    """The least an ingress does: read the body, parse it, answer the array as JSON."""
    message = await receive()
    values = np.asarray(orjson.loads(message["body"]), dtype=np.float32)
    body = orjson.dumps(values.tolist())
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def ready() -> bool:
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from ray.serve._private.thirdparty.get_asgi_route_name import get_asgi_route_name

    plain = ServiceApp(make_service("plain"), ready)
    guarded = ServiceApp(
        make_service("guarded", middlewares=[Middleware(CORSMiddleware, allow_origins=["https://a.example"])]), ready
    )

    def with_route_match(app):
        async def call(scope, receive, send):
            get_asgi_route_name(app, scope)
            await app(scope, receive, send)

        return call

    variants = {
        "baseline ASGI app": baseline_app,
        "raystore ServiceApp": plain,
        "  + Serve's route match": with_route_match(plain),
        "  + CORS middleware": guarded,
    }
    statuses: set[int] = set()

    async def receive():
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    def scope():
        return {
            "type": "http",
            "method": "POST",
            "path": "/predict",
            "root_path": "",
            "query_string": b"",
            "headers": list(HEADERS),
            "http_version": "1.1",
            "scheme": "http",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
        }

    async def run(app, n: int) -> float:
        start = time.perf_counter()
        for _ in range(n):
            await app(scope(), receive, send)
        return (time.perf_counter() - start) / n * 1e6

    async def measure() -> dict[str, float]:
        best = {name: float("inf") for name in variants}
        for app in variants.values():
            await run(app, 500)  # warm up
        for _ in range(args.repeats):
            for name, app in variants.items():
                best[name] = min(best[name], await run(app, args.requests))
        return best

    best = asyncio.run(measure())
    assert statuses == {200}, statuses
    base = best["baseline ASGI app"]
    print(f"\n{args.requests} requests x {args.repeats} repeats, fastest repeat, 1-row JSON array in and out\n")
    print(f"{'variant':<26} {'us/request':>10} {'vs baseline':>12} {'added us':>9}")
    print("-" * 60)
    for name, us in best.items():
        print(f"{name:<26} {us:>10.1f} {us / base:>12.2f} {us - base:>9.1f}")
    print("\nFor scale: `benchmarks/http_services.py` measures the whole replica, about 300 us of CPU")
    print("per request for the iris service behind HAProxy on a 2-core machine.")


if __name__ == "__main__":
    main()
