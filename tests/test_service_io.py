"""IO descriptors on their own, without a server: the JSON fast path must answer exactly what the
standard library path answered."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse

from raystore.exceptions import BadInput
from raystore.io import NumpyNdarray


def request_with(body: bytes) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
    }
    return Request(scope)


def parse(descriptor: NumpyNdarray, body: bytes) -> np.ndarray:
    return asyncio.run(descriptor.from_http(request_with(body), body))


@pytest.mark.parametrize(
    "array",
    [
        np.array([[0.1, 1e-7, 3.4028235e38, -2.5]], dtype=np.float32),
        np.arange(6, dtype=np.int64).reshape(2, 3) * (2**62 // 6),
        np.array([2**64 - 1], dtype=np.uint64),
        np.array([True, False]),
        np.array(["a", "null", "é"]),
        np.float64(2.5),
    ],
)
def test_numpy_output_renders_the_values_json_response_rendered(array):
    response = NumpyNdarray().to_http(array)
    assert json.loads(response.body) == json.loads(JSONResponse(np.asarray(array).tolist()).body)
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.body)


def test_non_finite_and_oversized_outputs_keep_the_standard_answers():
    with pytest.raises(ValueError, match="Out of range float"):  # as before: not valid JSON, so a 500
        NumpyNdarray().to_http(np.array([1.0, np.nan]))
    huge = np.array([2**70, 1], dtype=object)
    assert json.loads(NumpyNdarray().to_http(huge).body) == [2**70, 1]


def test_numpy_input_parses_what_the_standard_parser_parsed():
    assert parse(NumpyNdarray(dtype="float32"), b"[[0.5, 1, 2e3]]").tolist() == [[0.5, 1.0, 2000.0]]
    with pytest.raises(BadInput, match="the JSON holds NaN, which is not a number"):
        parse(NumpyNdarray(), b"[NaN, 1.0]")  # the standard parser's extension, refused
    with pytest.raises(BadInput, match="1e400 is out of range for a 64-bit float"):
        parse(NumpyNdarray(), b"[1e400, 1.0]")
    with pytest.raises(BadInput, match="an integer beyond 64 bits"):
        parse(NumpyNdarray(), str([2**70]).encode())
    with pytest.raises(BadInput, match="not valid JSON: Expecting"):
        parse(NumpyNdarray(), b"[[1, 2,")


def test_a_json_output_with_a_model_answers_what_its_schema_says():
    import pydantic

    from raystore.exceptions import InvalidOutput
    from raystore.io import JSON

    class Score(pydantic.BaseModel):
        label: str = pydantic.Field(alias="class")
        score: float = pydantic.Field(ge=0, le=1)

    class Scores(pydantic.RootModel[list[Score]]):
        pass

    output = JSON(Scores)
    rendered = output.to_http([{"class": "cat", "score": 0.75}])  # plain values, validated on the way out
    assert json.loads(rendered.body) == [{"class": "cat", "score": 0.75}]  # by alias, as documented
    assert json.loads(output.to_http(Scores([Score(**{"class": "dog", "score": 1})])).body)[0]["class"] == "dog"
    import dataclasses

    @dataclasses.dataclass
    class Row:
        label: str
        score: float

    by_name = output.to_http([{"label": "owl", "score": 0.5}, Row("bat", 0.25)])  # field names, attributes
    assert json.loads(by_name.body) == [{"class": "owl", "score": 0.5}, {"class": "bat", "score": 0.25}]
    with pytest.raises(
        InvalidOutput, match=r"does not match Scores: 0\.score: Input should be less than or equal to 1"
    ):
        output.to_http([{"class": "cat", "score": 7}])
    schema = output.openapi_schema()
    assert schema["type"] == "array" and schema["items"] == {"$ref": "#/components/schemas/Score"}
