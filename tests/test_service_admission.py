"""What an ingress replica lets in (`service/admission.py`): slow bodies cut with a 408, body bytes
in flight bounded with a 503 before the body is read, and an API that sheds before parsing while
its runner's queue is full. In process through the real endpoint, then over HTTP with raw sockets
against `raystore serve`."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.request

import pytest
from serving import raystore_serve
from starlette.requests import Request

import raystore
from raystore._private.service.admission import Admission
from raystore._private.service.app import api_endpoint
from raystore.exceptions import InvalidArgument, QueueFull, ServiceUnavailable
from raystore.io import JSON, Text

pytestmark = pytest.mark.timeout(120)


class Client:
    """One request's ASGI `receive`: the body in the given chunks, each after its delay (None:
    never comes). Records whether the endpoint asked for the body at all."""

    def __init__(self, chunks: list[tuple[float | None, bytes]], declared: int | None = None, text: bool = False):
        self.chunks = list(chunks)
        self.asked = False
        total = sum(len(c) for _, c in chunks)
        headers = [(b"content-type", b"text/plain" if text else b"application/json")]
        if declared is not None or total:
            headers.append((b"content-length", str(total if declared is None else declared).encode()))
        self.scope = {"type": "http", "method": "POST", "path": "/", "headers": headers, "query_string": b""}

    @classmethod
    def chunked(cls, chunks: list[tuple[float | None, bytes]]) -> Client:
        client = cls(chunks)
        client.scope["headers"] = [(b"content-type", b"text/plain")]  # no Content-Length
        return client

    async def receive(self) -> dict:
        self.asked = True
        if not self.chunks:
            await asyncio.sleep(3600)  # a client that never says more
        delay, chunk = self.chunks.pop(0)
        if delay is None:
            await asyncio.sleep(3600)
        await asyncio.sleep(delay)
        return {"type": "http.request", "body": chunk, "more_body": bool(self.chunks)}

    def request(self) -> Request:
        return Request(self.scope, self.receive)


def _answer(response) -> tuple[int, dict, dict]:
    return response.status_code, json.loads(response.body), dict(response.headers)


def test_a_body_that_stalls_is_a_408_within_the_timeout_and_holds_nothing():
    svc = raystore.Service("stall", body_timeout_s=0.3)

    @svc.api(input=JSON(), output=JSON())
    async def echo(body):
        return body

    endpoint = api_endpoint(svc, svc.apis["echo"])

    async def run():
        started = time.monotonic()
        response = await endpoint(Client([(0, b"[1"), (None, b"]")]).request())
        return response, time.monotonic() - started

    response, took = asyncio.run(run())
    status, body, headers = _answer(response)
    assert status == 408 and "did not arrive in time: 2 of 3 bytes" in body["error"]
    assert headers["connection"] == "close"
    assert 0.25 < took < 1.5


def test_a_slow_but_steady_body_buys_time_with_every_byte():
    # 0.3 s of grace, then 1 s per 10 kB: 20 chunks of 1 kB every 50 ms (1 s in all) keep ahead of it
    svc = raystore.Service("steady", body_timeout_s=0.3, min_body_rate=10_000)

    @svc.api(input=Text(), output=JSON())
    async def size(text):
        return len(text)

    chunks = [(0.05, b"x" * 1000) for _ in range(20)]
    status, body, _ = _answer(asyncio.run(api_endpoint(svc, svc.apis["size"])(Client(chunks, text=True).request())))
    assert (status, body) == (200, 20_000)
    # a dribble at a tenth of that rate is cut once the grace and the bytes' credit are spent
    dribble = [(0.05, b"x" * 10) for _ in range(40)]
    status, body, _ = _answer(asyncio.run(api_endpoint(svc, svc.apis["size"])(Client(dribble, text=True).request())))
    assert status == 408 and "of 400 bytes" in body["error"]


def _held_service(name: str, **limits):
    """A service whose API holds each request until released: bodies stay in flight meanwhile."""
    svc = raystore.Service(name, **limits)
    release = asyncio.Event()

    @svc.api(input=Text(), output=JSON())
    async def hold(text):
        await release.wait()
        return len(text)

    return svc, release


def test_body_bytes_in_flight_are_bounded_before_any_body_is_read():
    svc, release = _held_service("inflight", max_body_bytes=600, max_body_bytes_in_flight=1000)

    async def run():
        endpoint = api_endpoint(svc, svc.apis["hold"])
        first = Client([(0, b"a" * 600)], text=True)
        held = asyncio.create_task(endpoint(first.request()))
        await asyncio.sleep(0.05)
        second = Client([(0, b"b" * 600)], text=True)
        refused = await endpoint(second.request())  # 600 + 600 > 1000: refused unread
        small = asyncio.create_task(endpoint(Client([(0, b"c" * 300)], text=True).request()))  # 900: fits
        await asyncio.sleep(0.05)
        release.set()
        answers = [await held, refused, await small]
        again = await endpoint(Client([(0, b"d" * 600)], text=True).request())  # all given back
        return second.asked, answers, again

    second_asked, (held, refused, small), again = asyncio.run(run())
    assert not second_asked  # not a byte of the refused body was read
    status, body, headers = _answer(refused)
    assert status == 503 and "max_body_bytes_in_flight=1000" in body["error"] and headers["retry-after"] == "1"
    assert [_answer(r)[:2] for r in (held, small, again)] == [(200, 600), (200, 300), (200, 600)]


def test_a_body_of_unknown_length_is_counted_as_it_arrives_and_given_back_when_it_fails():
    svc, release = _held_service("chunked", max_body_bytes=600, max_body_bytes_in_flight=1000)

    async def run():
        endpoint = api_endpoint(svc, svc.apis["hold"])
        held = asyncio.create_task(endpoint(Client([(0, b"a" * 600)], text=True).request()))
        await asyncio.sleep(0.05)
        # 300 fit beside the 600, the next 300 do not: refused part-way, and its 300 given back
        refused = await endpoint(Client.chunked([(0, b"b" * 300), (0, b"b" * 300)]).request())
        fits = asyncio.create_task(endpoint(Client.chunked([(0, b"c" * 200), (0, b"c" * 200)]).request()))
        await asyncio.sleep(0.05)
        release.set()
        return await held, refused, await fits

    held, refused, fits = asyncio.run(run())
    assert _answer(refused)[0] == 503
    assert [_answer(r)[:2] for r in (held, fits)] == [(200, 600), (200, 400)]


def test_an_api_whose_runner_sheds_load_sheds_before_reading_the_next_bodies():
    svc = raystore.Service("backpressure")
    calls = []

    @svc.api(input=JSON(), output=JSON())
    async def predict(body):
        calls.append(body)
        if len(calls) == 1:
            raise QueueFull("__call__: overloaded", retry_after_s=0.4)  # what a runner's batch queue raises
        return body

    @svc.api(input=JSON(), output=JSON())
    async def other(body):
        return body

    async def run():
        endpoint = api_endpoint(svc, svc.apis["predict"])
        first = await endpoint(Client([(0, b"1")]).request())
        client = Client([(0, b"2")])
        shed = await endpoint(client.request())
        unaffected = await api_endpoint(svc, svc.apis["other"])(Client([(0, b"3")]).request())
        await asyncio.sleep(0.45)
        later = await endpoint(Client([(0, b"4")]).request())
        return first, (shed, client.asked), unaffected, later

    first, (shed, asked), unaffected, later = asyncio.run(run())
    assert _answer(first)[0] == 503
    status, body, _ = _answer(shed)
    assert status == 503 and "'predict' is shedding load" in body["error"] and not asked
    assert _answer(unaffected)[:2] == (200, 3)  # another API of the service is not held back
    assert _answer(later)[:2] == (200, 4) and calls == [1, 4]


def test_an_api_that_raises_service_unavailable_itself_is_not_held_back():
    svc = raystore.Service("own-503")
    calls = []

    @svc.api(input=JSON(), output=JSON())
    async def predict(body):
        calls.append(body)
        if len(calls) == 1:
            raise ServiceUnavailable("a downstream service is busy", retry_after_s=30)
        return body

    async def run():
        endpoint = api_endpoint(svc, svc.apis["predict"])
        return [await endpoint(Client([(0, str(i).encode())]).request()) for i in (1, 2)]

    first, second = asyncio.run(run())
    assert _answer(first)[0] == 503 and _answer(second)[:2] == (200, 2) and calls == [1, 2]


def test_a_stalled_upload_holds_only_the_bytes_it_sent_not_the_length_it_declared():
    svc, release = _held_service("stalled", max_body_bytes=1000, max_body_bytes_in_flight=1000, body_timeout_s=5)

    async def run():
        endpoint = api_endpoint(svc, svc.apis["hold"])
        stalled = asyncio.create_task(
            endpoint(Client([(0, b"a" * 10), (None, b"")], declared=900, text=True).request())
        )
        await asyncio.sleep(0.05)
        honest = asyncio.create_task(endpoint(Client([(0, b"b" * 600)], text=True).request()))  # 10 + 600 fit
        await asyncio.sleep(0.05)
        release.set()
        answer = await honest
        stalled.cancel()
        return answer

    assert _answer(asyncio.run(run()))[:2] == (200, 600)


def test_bytes_stay_counted_while_a_plain_function_still_works_for_a_client_that_left():
    svc = raystore.Service("sync-held")
    go_on = threading.Event()

    @svc.api(input=Text(), output=JSON())
    def slow(text):
        go_on.wait(10)
        return len(text)

    gate = Admission(svc.body_limits)

    async def run():
        task = asyncio.create_task(
            api_endpoint(svc, svc.apis["slow"], admission=gate)(Client([(0, b"x" * 600)], text=True).request())
        )
        await asyncio.sleep(0.1)
        task.cancel()  # the client went away; the thread goes on with the parsed value
        await asyncio.gather(task, return_exceptions=True)
        held = gate.bytes_in_flight
        go_on.set()
        for _ in range(100):
            if gate.bytes_in_flight == 0:
                break
            await asyncio.sleep(0.02)
        return held, gate.bytes_in_flight

    assert asyncio.run(run()) == (600, 0)


def test_a_content_length_that_is_no_number_is_a_400():
    svc = raystore.Service("badlength")

    @svc.api(input=JSON(), output=JSON())
    async def echo(body):
        return body

    for length in ("12abc", "\u00b2", "-1", ""):  # a superscript two is a digit to str.isdigit
        client = Client([(0, b"1")])
        client.scope["headers"] = [(b"content-type", b"application/json"), (b"content-length", length.encode())]
        status, body, _ = _answer(asyncio.run(api_endpoint(svc, svc.apis["echo"])(client.request())))
        assert status == 400 and "is not a number of bytes" in body["error"], (length, body)


@pytest.mark.parametrize(
    "options, words",
    [
        ({"body_timeout_s": 0}, "body_timeout_s must be a positive number"),
        ({"min_body_rate": "fast"}, "min_body_rate must be a positive number"),
        ({"max_body_bytes": 100, "max_body_bytes_in_flight": 50}, r"at least max_body_bytes \(100\)"),
        ({"max_ongoing_requests": 0}, "max_ongoing_requests must be a positive int"),
        ({"max_body_bytes": True}, "max_body_bytes must be a positive int"),
    ],
)
def test_limits_are_checked_when_the_service_is_defined(options, words):
    with pytest.raises(InvalidArgument, match=words):
        raystore.Service("limits", **options)


def test_in_flight_bound_defaults_to_64_mib_or_one_largest_body():
    assert raystore.Service("a").body_limits.max_body_bytes_in_flight == 64 * 2**20
    assert raystore.Service("b", max_body_bytes=100 * 2**20).body_limits.max_body_bytes_in_flight == 100 * 2**20


# ---- over HTTP ------------------------------------------------------------------------------------


def _slow_sender(port: int) -> socket.socket:
    """A client that sends its headers and then the first two bytes of a 1000-byte body."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[1")
    return sock


def _status_line(sock: socket.socket) -> str:
    try:
        return sock.recv(200).split(b"\r\n", 1)[0].decode()
    except OSError as exc:
        return f"error: {exc}"
    finally:
        sock.close()


@pytest.mark.ray
def test_slow_clients_over_http_lose_their_slots_and_others_are_answered(subprocess_env, tmp_path):
    (tmp_path / "slow_bodies.py").write_text(
        "import raystore\nfrom raystore.io import JSON\n"
        "svc = raystore.Service('slow-bodies', max_ongoing_requests=6, body_timeout_s=2)\n"
        "@svc.api(input=JSON(), output=JSON())\nasync def echo(body):\n    return body\n"
    )
    with raystore_serve(subprocess_env, "slow_bodies:svc", tmp_path) as (_, port):
        slow = [_slow_sender(port) for _ in range(10)]  # more than the ingress takes at once
        time.sleep(0.5)
        started = time.monotonic()
        answers = []
        for value in (1, 2, 3):
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/echo",
                data=json.dumps(value).encode(),
                method="POST",
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                answers.append(json.loads(response.read()))
        waited = time.monotonic() - started
        statuses = [_status_line(sock) for sock in slow]
    assert answers == [1, 2, 3]
    assert waited < 15  # slots freed after about 2 s, not after the slow bodies end (never)
    assert all(" 408 " in line for line in statuses), statuses
