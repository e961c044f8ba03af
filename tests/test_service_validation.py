"""Bad input never reaches the API: whatever body and content type a client sends, every IO
descriptor answers with the API's result or a 4xx that says what was expected, never a 500.

The requests go through the real endpoint (`api_endpoint`: body limit, descriptor, API call,
rendering, error mapping) without a server, so hypothesis can send thousands of them.
"""

from __future__ import annotations

import asyncio
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.requests import Request

import raystore
from raystore._private.service.app import api_endpoint
from raystore.io import JSON, File, Image, Multipart, NumpyNdarray, PandasDataFrame, Text


class Order:  # a pydantic model, made lazily: pydantic is imported by the JSON descriptor only
    model = None


def _order_model():
    if Order.model is None:
        import pydantic

        class OrderModel(pydantic.BaseModel):
            item: str
            quantity: int = pydantic.Field(gt=0)

        Order.model = OrderModel
    return Order.model


DESCRIPTORS = {
    "ndarray": lambda: NumpyNdarray(),
    "ndarray_float32_rows_of_3": lambda: NumpyNdarray(dtype="float32", shape=(-1, 3), enforce_shape=True),
    "ndarray_int8": lambda: NumpyNdarray(dtype="int8"),
    "ndarray_enforced_int64": lambda: NumpyNdarray(dtype="int64", enforce_dtype=True),
    "json": lambda: JSON(),
    "json_pydantic": lambda: JSON(pydantic_model=_order_model()),
    "text": lambda: Text(),
    "file": lambda: File(),
    "dataframe_records": lambda: PandasDataFrame(),
    "dataframe_split_columns": lambda: PandasDataFrame(orient="split", columns=["a", "b"]),
    "image": lambda: Image(),
    "multipart": lambda: Multipart(meta=JSON(), note=Text()),
}

CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "text/plain",
    "text/csv",
    "image/png",
    "application/octet-stream",
    "multipart/form-data; boundary=xyz",
    "application/x-www-form-urlencoded",
]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)
numeric_arrays = st.lists(
    st.lists(st.one_of(st.integers(-(2**70), 2**70), st.floats(allow_nan=True, allow_infinity=True)), max_size=4),
    max_size=4,
)
bodies = st.one_of(
    json_values.map(lambda v: json.dumps(v).encode()),  # NaN and Infinity as the standard library writes them
    numeric_arrays.map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=64),
    st.text(max_size=40).map(str.encode),
    st.sampled_from(
        [b"a,b\n1,2\n3,inf\n", b"a,b\n1,2\n", b"--xyz\r\n\r\n--xyz--\r\n", b"\x89PNG\r\n\x1a\n", b"[1e400]"]
    ),
)


def _service(name: str, descriptor) -> raystore.Service:
    svc = raystore.Service(f"validate-{name.replace('_', '-')}", max_body_bytes=4096)

    @svc.api(input=descriptor, output=Text())
    def accept(value):
        return type(value).__name__  # the descriptor's job ends at the value; the API only names it

    return svc


ENDPOINTS = {
    name: api_endpoint(svc, svc.apis["accept"])
    for name, svc in ((name, _service(name, make())) for name, make in DESCRIPTORS.items())
}


def _request(body: bytes, content_type: str | None) -> Request:
    headers = [(b"content-length", str(len(body)).encode())]
    if content_type is not None:
        headers.append((b"content-type", content_type.encode()))
    delivered = False

    async def receive() -> dict:
        nonlocal delivered
        if delivered:
            return {"type": "http.disconnect"}
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/accept", "headers": headers, "query_string": b""}
    return Request(scope, receive)


def _answer(name: str, body: bytes, content_type: str | None) -> tuple[int, str]:
    response = asyncio.run(ENDPOINTS[name](_request(body, content_type)))
    return response.status_code, response.body.decode(errors="replace")


@pytest.mark.parametrize("name", sorted(DESCRIPTORS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=bodies, content_type=st.sampled_from(CONTENT_TYPES))
def test_every_descriptor_answers_2xx_or_4xx_to_any_body(name, body, content_type):
    status, text = _answer(name, body, content_type)
    assert 200 <= status < 500, (status, text)
    if status >= 400:
        assert json.loads(text)["error"]  # a message that says what was wrong


@pytest.mark.parametrize(
    "name, body, content_type, status, words",
    [
        ("ndarray", b"[1e400, 2]", "application/json", 400, "1e400 is out of range for a 64-bit float"),
        ("ndarray", b"[NaN]", "application/json", 400, "the JSON holds NaN, which is not a number"),
        ("ndarray", b'{"x": [1, 2, 3, 4]}', "application/json", 400, "expected a JSON array of numbers"),
        ("ndarray", b'["a", "b"]', "application/json", 400, "expected an array of numbers, got strings"),
        ("ndarray", b"[[1, 2], [3]]", "application/json", 400, "rows have different lengths"),
        ("ndarray", b"[1, null]", "application/json", 400, "the array holds null"),
        ("ndarray_int8", b"[1, 300]", "application/json", 400, "out of range for int8 (-128 to 127): 300"),
        ("ndarray_float32_rows_of_3", b"[[1, 2, 1e39]]", "application/json", 400, "out of range for float32"),
        ("json", b'{"x": Infinity}', "application/json", 400, "the JSON holds Infinity"),
        ("json", b'{"id": 18446744073709551617}', "application/json", 200, "dict"),
        ("text", b"hi", "application/json", 415, "expected a text body"),
        ("dataframe_records", b"a,b\n1,inf\n", "text/csv", 400, "holds an infinite number"),
        ("dataframe_records", b"[1, 2]", "text/plain", 415, "expected a body of type application/json"),
    ],
)
def test_what_each_refusal_says(name, body, content_type, status, words):
    answer = _answer(name, body, content_type)
    assert answer[0] == status and words in answer[1], answer


def test_json_keeps_integers_beyond_64_bits_exact():
    parsed = asyncio.run(
        JSON().from_http(_request(b"[18446744073709551617]", "application/json"), b"[18446744073709551617]")
    )
    assert parsed == [18446744073709551617] and isinstance(parsed[0], int)


def test_a_client_that_leaves_mid_body_is_a_499_not_a_failure(caplog):
    svc = _service("leaver", Text())

    async def receive():
        return {"type": "http.disconnect"}  # gone before sending the body

    scope = {"type": "http", "method": "POST", "path": "/accept", "headers": [], "query_string": b""}
    with caplog.at_level("ERROR", logger="raystore.service"):
        response = asyncio.run(api_endpoint(svc, svc.apis["accept"])(Request(scope, receive)))
    assert response.status_code == 499 and "closed the connection" in json.loads(response.body)["error"]
    assert caplog.records == []  # no traceback for a client that went away
