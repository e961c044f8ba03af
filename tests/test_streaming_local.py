"""Streaming without Ray: runners in this process (`init_local`), and a service's ASGI app called
directly: framing, errors, and what may and may not stream."""

import asyncio
import json

import pytest

import raystore
from raystore.exceptions import InvalidArgument
from raystore.io import JSON, NumpyNdarray, Text


class Words(raystore.Runnable):
    @raystore.Runnable.method(batchable=True, continuous=True)
    async def grow(self, words: list):
        states = list(words)
        while states:
            out = [w if len(w) < 4 else StopIteration for w in states]
            update = yield out
            states = [w + "+" for w in update.keep(states)]
            if update.joined:
                states += update.joined["words"]

    @raystore.Runnable.method
    async def chars(self, word: str):
        for char in word:
            yield char

    @raystore.Runnable.method(batchable=True)
    def upper(self, words: list) -> list:
        return [w.upper() for w in words]


def test_a_local_runner_streams_batched_and_plain_methods():
    runner = raystore.Runner(Words).init_local()
    try:
        assert runner.grow.streams and runner.chars.streams and not runner.upper.streams

        async def main():
            async def grow(word):
                return [piece[0] async for piece in runner.grow.async_stream([word])]

            grown = await asyncio.gather(grow("a"), grow("bcd"), grow("xy"))
            chars = [c async for c in runner.chars.async_stream("abc")]
            return grown, chars

        grown, chars = asyncio.run(main())
        assert grown == [["a", "a+", "a++"], ["bcd"], ["xy", "xy+"]]
        assert chars == ["a", "b", "c"]
        assert runner.upper.run(["a"]) == ["A"]  # plain methods are untouched
    finally:
        runner.destroy_local()


def test_calling_a_method_the_wrong_way_says_the_right_way():
    runner = raystore.Runner(Words).init_local()
    try:
        with pytest.raises(InvalidArgument, match=r"grow streams .*async for piece in runner.grow.async_stream"):
            runner.grow.run(["a"])
        with pytest.raises(InvalidArgument, match="upper does not stream"):
            runner.upper.async_stream(["a"])
    finally:
        runner.destroy_local()


def test_continuous_needs_a_batchable_async_generator():
    class Wrong(raystore.Runnable):
        @raystore.Runnable.method(batchable=True, continuous=True)
        def predict(self, xs):
            return xs

    with pytest.raises(InvalidArgument, match="continuous=True needs a batchable async generator"):
        raystore.Runner(Wrong)


def test_stream_formats_are_checked():
    assert Text(stream=True).stream == "sse" and Text(stream="text").stream == "text"
    assert JSON(stream="jsonl").stream == "jsonl" and NumpyNdarray(stream=True).stream == "sse"
    with pytest.raises(InvalidArgument, match=r"Text\(stream=...\) must be True, False or one of \['sse', 'text'\]"):
        Text(stream="jsonl")


def test_only_async_generator_apis_stream_and_they_must():
    svc = raystore.Service("checks")

    async def pieces(x):
        yield x

    async def whole(x):
        return x

    def plain_generator(x):
        yield x

    with pytest.raises(InvalidArgument, match=r"async generator.*Text\(stream=True\)"):
        svc.api(input=Text(), output=Text())(pieces)
    with pytest.raises(InvalidArgument, match="returns one value"):
        svc.api(input=Text(), output=Text(stream=True))(whole)
    with pytest.raises(InvalidArgument, match="plain generator"):
        svc.api(input=Text(), output=Text(stream=True))(plain_generator)


def _asgi_post(app, path: str, body: bytes) -> tuple[int, dict, list[bytes]]:
    """One POST through an ASGI app in this process: (status, headers, body chunks as sent)."""
    sent: list[dict] = []
    done = False

    async def receive():
        nonlocal done
        if done:
            await asyncio.sleep(3600)  # the client stays: no disconnect
        done = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "method": "POST",
        "path": path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"text/plain")],
    }
    asyncio.run(app(scope, receive, send))
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, [m["body"] for m in sent[1:] if m.get("body")]


def _service_app():
    from raystore._private.service.app import ServiceApp

    svc = raystore.Service("framing")

    @svc.api(input=Text(), output=Text(stream=True))
    async def lines(text: str):
        for line in text.split("|"):
            yield line

    @svc.api(input=Text(), output=JSON(stream="jsonl"))
    async def failing(text: str):
        yield {"ok": text}
        raise RuntimeError("gave up")

    @svc.api(input=Text(), output=Text(stream="sse"))
    async def nothing(text: str):
        if text == "refuse":
            raise raystore.exceptions.BadInput("refused before the first piece")
        return
        yield  # an async generator that yields nothing

    class Metrics:
        def record(self, *args):
            pass

    async def ready():
        return True

    return ServiceApp(svc, ready, Metrics())


def test_server_sent_events_frame_each_piece_and_split_lines():
    status, headers, chunks = _asgi_post(_service_app(), "/lines", b"one|two\nlines|three")
    assert status == 200 and headers["content-type"].startswith("text/event-stream")
    assert headers["cache-control"] == "no-cache"
    assert chunks == [b"data: one\n\n", b"data: two\ndata: lines\n\n", b"data: three\n\n"]  # one chunk a piece


def test_a_failure_mid_stream_ends_json_lines_with_an_error_line():
    status, headers, chunks = _asgi_post(_service_app(), "/failing", b"x")
    assert status == 200 and headers["content-type"].startswith("application/jsonl")
    lines = [json.loads(line) for line in b"".join(chunks).decode().splitlines()]
    assert lines == [{"ok": "x"}, {"error": "RuntimeError: gave up"}]


def test_an_empty_stream_is_an_empty_body_and_an_early_refusal_its_status():
    app = _service_app()
    status, _, chunks = _asgi_post(app, "/nothing", b"fine")
    assert status == 200 and chunks == []
    status, _, chunks = _asgi_post(app, "/nothing", b"refuse")
    assert status == 400 and "refused before the first piece" in json.loads(b"".join(chunks))["error"]


def test_a_carriage_return_in_a_piece_is_a_line_break_to_server_sent_events():
    from raystore._private.service.streams import streamed_response

    async def nothing_more():
        return
        yield

    response = streamed_response(Text(stream=True), "x\ry\r\nz", nothing_more(), "api")

    async def body():
        return b"".join([chunk async for chunk in response.body_iterator])

    assert asyncio.run(body()) == b"data: x\ndata: y\ndata: z\n\n"


def test_streamed_outputs_are_described_with_their_piece_schemas_in_components():
    import pydantic
    from openapi_spec_validator import validate

    from raystore._private.service.openapi import openapi_spec

    class Token(pydantic.BaseModel):
        text: str

    class Piece(pydantic.BaseModel):
        token: Token
        index: int

    svc = raystore.Service("documented")

    @svc.api(input=Text(), output=JSON(Piece, stream="sse"))
    async def pieces(text: str):
        yield Piece(token=Token(text=text), index=0)

    @svc.api(input=Text(), output=NumpyNdarray(stream="jsonl"))
    async def arrays(text: str):
        yield [1.0]

    spec = openapi_spec(svc)
    validate(spec)
    sse = spec["paths"]["/pieces"]["post"]["responses"]["200"]["content"]["text/event-stream"]
    assert sse["x-raystore-stream"]["format"] == "sse" and "$defs" not in sse["x-raystore-stream"]["itemSchema"]
    assert {"Token", "NDArray"} <= set(spec["components"]["schemas"])  # every $ref has its target


def test_an_input_does_not_stream():
    svc = raystore.Service("inputs")

    async def echo(x):
        return x

    with pytest.raises(InvalidArgument, match="stream= is for outputs"):
        svc.api(input=Text(stream=True), output=Text())(echo)
