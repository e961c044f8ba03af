"""The Open Inference Protocol's encodings, JSON and binary (Triton's binary tensor data
extension), for every datatype: round trips found by Hypothesis, and malformed messages refused."""

import struct

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from raystore._private.service.v2.codec import (
    DTYPES,
    HEADER_LENGTH,
    Tensor,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    tensor_from_binary,
    tensor_from_json,
    tensor_to_binary,
    tensor_to_json,
)
from raystore.exceptions import BadInput

SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)


@st.composite
def arrays(draw, datatype=None):
    datatype = datatype or draw(st.sampled_from(sorted(DTYPES)))
    shape = draw(SHAPES)
    if datatype == "BYTES":
        text = st.text(max_size=8) | st.binary(max_size=8).filter(_not_utf8)
        items = draw(st.lists(text, min_size=int(np.prod(shape)), max_size=int(np.prod(shape))))
        array = np.empty(len(items), dtype=object)
        array[:] = items
        return datatype, array.reshape(shape)
    dtype = DTYPES[datatype]
    elements = None
    if dtype.kind == "f":  # JSON has no NaN or infinity
        elements = st.floats(allow_nan=False, allow_infinity=False, width=8 * dtype.itemsize)
    return datatype, draw(hnp.arrays(dtype, shape, elements=elements))


def _not_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _same(a: np.ndarray, b: np.ndarray) -> None:
    assert a.shape == b.shape and a.dtype == b.dtype
    assert a.reshape(-1).tolist() == b.reshape(-1).tolist()


@settings(max_examples=300, deadline=None)
@given(arrays())
def test_every_datatype_round_trips_through_binary(case):
    datatype, array = case
    _same(tensor_from_binary("x", datatype, list(array.shape), tensor_to_binary(array)), array)


@settings(max_examples=300, deadline=None)
@given(arrays())
def test_every_datatype_round_trips_through_json(case):
    datatype, array = case
    if datatype == "BYTES" and any(isinstance(item, bytes) for item in array.reshape(-1)):
        with pytest.raises(BadInput, match="not UTF-8 text: ask for it in binary"):
            tensor_to_json(array)
        return
    data = orjson.loads(orjson.dumps(tensor_to_json(array)))
    _same(tensor_from_json("x", datatype, list(array.shape), data), array)


@settings(max_examples=100, deadline=None)
@given(st.lists(arrays(), min_size=1, max_size=4), st.booleans())
def test_whole_requests_and_responses_round_trip(cases, binary):
    tensors = [Tensor(f"t{i}", array) for i, (_, array) in enumerate(cases)]
    if not binary and any(isinstance(item, bytes) for t in tensors for item in t.array.reshape(-1)):
        return  # only binary carries bytes that are not text
    body, headers = encode_request(tensors, binary=binary, request_id="r1")
    request = decode_request(body, headers.get(HEADER_LENGTH))
    assert request.id == "r1" and [t.name for t in request.inputs] == [t.name for t in tensors]
    for got, want in zip(request.inputs, tensors, strict=True):
        _same(got.array, want.array)
    body, headers = encode_response("m", "v1", request.inputs, request_id="r1", binary=binary)
    assert (headers["Content-Type"] == "application/octet-stream") == binary
    for name, array in decode_response(body, headers.get(HEADER_LENGTH)).items():
        _same(array, next(t.array for t in tensors if t.name == name))


def test_nested_data_is_read_row_major():
    array = tensor_from_json("x", "INT32", [2, 3], [[1, 2, 3], [4, 5, 6]])
    assert array.dtype == np.int32 and array.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert tensor_from_json("x", "FP32", [2, 2], [1, 2.5, 3, 4]).tolist() == [[1.0, 2.5], [3.0, 4.0]]


def test_a_mixed_request_takes_binary_inputs_in_order():
    header = {
        "id": "7",
        "inputs": [
            {"name": "a", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}},
            {"name": "b", "datatype": "INT64", "shape": [1], "data": [5]},
            {"name": "c", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 7}},
        ],
        "outputs": [{"name": "y", "parameters": {"binary_data": True}}],
        "parameters": {"binary_data_output": False},
    }
    head = orjson.dumps(header)
    body = head + np.array([1.5, -2], "<f4").tobytes() + struct.pack("<I", 3) + b"abc"
    request = decode_request(body, str(len(head)))
    assert [t.array.tolist() for t in request.inputs] == [[1.5, -2.0], [5], ["abc"]]
    assert request.outputs[0].binary is True and request.binary_outputs is False and request.id == "7"


@pytest.mark.parametrize(
    "header, extra, words",
    [
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3]}]},
            b"",
            "holds 4 elements, data has 3",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP23", "shape": [1], "data": [1]}]},
            b"",
            "datatype 'FP23' is not one of",
        ),
        ({"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [300]}]}, b"", "out of INT8's range"),
        ({"inputs": [{"name": "x", "datatype": "FP16", "shape": [1], "data": [1e6]}]}, b"", "out of FP16's range"),
        (
            {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1], "data": [1.5]}]},
            b"",
            "INT32 elements are integers",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "BOOL", "shape": [1], "data": [1]}]},
            b"",
            "BOOL elements are true or false",
        ),
        ({"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "data": [1]}]}, b"", "strings in JSON"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1], "data": []}]}, b"", "negative dimension"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}]}, b"", "neither 'data' nor a binary_data_size"),
        ({"inputs": []}, b"", "needs 'inputs'"),
        ({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}] * 2}, b"", "given twice"),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}]},
            b"\0" * 4,
            "goes past the request's binary data",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 4}}]},
            b"\0" * 4,
            "takes 8 bytes, got 4",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}]},
            struct.pack("<I", 9) + b"ab",
            "says 9 bytes, only 2 are left",
        ),
        (
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]},
            b"\0\0",
            "2 bytes after the header belong to no input",
        ),
    ],
)
def test_malformed_requests_say_what_is_wrong(header, extra, words):
    head = orjson.dumps(header)
    with pytest.raises(BadInput) as err:
        decode_request(head + extra, str(len(head)) if extra else None)
    assert words in str(err.value)


def test_a_bad_header_length_or_body_is_refused():
    with pytest.raises(BadInput, match="Inference-Header-Content-Length is 99, but the body has 2 bytes"):
        decode_request(b"{}", "99")
    with pytest.raises(BadInput, match="not JSON"):
        decode_request(b"{nope")
    with pytest.raises(BadInput, match="must be a number of bytes"):
        decode_request(b"{}", "ten")
