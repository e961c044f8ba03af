"""The Open Inference Protocol's (KServe V2) tensors and messages, as bytes on the wire and numpy
arrays in raystore: JSON tensors (`data`, flat or nested, row-major) and Triton's binary tensor
data extension (`binary_data_size` per input, `Inference-Header-Content-Length` for the JSON
header's length, `binary_data` / `binary_data_output` for outputs).

Every protocol datatype maps to one numpy dtype. BYTES elements are Python `str` when they are
UTF-8 (what clients send as strings), else `bytes`; on the wire in binary each is a 4-byte
little-endian length and its bytes. Nothing here knows of models or HTTP routes: malformed
input is a `BadInput` saying what was wrong.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from raystore.exceptions import BadInput

HEADER_LENGTH = "Inference-Header-Content-Length"

# protocol datatype -> numpy dtype (little-endian, as the binary extension lays elements out)
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("bool"),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype("object"),
}
_BY_KIND_AND_SIZE = {(dtype.kind, dtype.itemsize): name for name, dtype in DTYPES.items() if name != "BYTES"}


def datatype_of(array: np.ndarray) -> str:
    """The protocol datatype of a numpy array (strings and objects are BYTES)."""
    dtype = array.dtype
    if dtype.kind in "OSU":
        return "BYTES"
    name = _BY_KIND_AND_SIZE.get((dtype.kind, dtype.itemsize))
    if name is None:
        raise BadInput(f"a {dtype} array has no Open Inference Protocol datatype")
    return name


@dataclass
class Tensor:
    """One named tensor of a request or response, with its protocol parameters."""

    name: str
    array: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def datatype(self) -> str:
        return datatype_of(self.array)


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: as the request's `binary_data_output` says


@dataclass
class InferRequest:
    inputs: list[Tensor]
    id: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[RequestedOutput] | None = None  # None: every output

    @property
    def binary_outputs(self) -> bool:
        return bool(self.parameters.get("binary_data_output", False))


# ---- one tensor ----------------------------------------------------------------------------------


def _check_shape(shape: Any, where: str) -> tuple[int, ...]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise BadInput(f"{where}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise BadInput(f"{where}: shape {shape} has a negative dimension")
    return tuple(shape)


def _dtype_of(datatype: Any, where: str) -> np.dtype:
    dtype = DTYPES.get(datatype) if isinstance(datatype, str) else None
    if dtype is None:
        raise BadInput(f"{where}: datatype {datatype!r} is not one of {', '.join(DTYPES)}")
    return dtype


def _flatten(data: Any, where: str) -> list[Any]:
    """Nested lists, row-major, as one flat list. A list whose first item is not a list is taken
    as flat without a look at every item: an item that is a list after all fails the datatype's
    check as any other wrong item does."""
    if not isinstance(data, list):
        raise BadInput(f"{where}: data must be a list (flat or nested), got {type(data).__name__}")
    if not data or not isinstance(data[0], list):
        return data
    flat: list[Any] = []
    stack: list[Iterable[Any]] = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def tensor_from_json(name: str, datatype: Any, shape: Any, data: Any) -> np.ndarray:
    """The array a JSON tensor holds, checked against its shape and datatype."""
    where = f"input {name!r}"
    dims = _check_shape(shape, where)
    dtype = _dtype_of(datatype, where)
    flat = _flatten(data, where)
    count = math.prod(dims)
    if len(flat) != count:
        raise BadInput(f"{where}: shape {list(dims)} holds {count} elements, data has {len(flat)}")
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise BadInput(f"{where}: BYTES elements are strings in JSON, element {i} is {type(item).__name__}")
            array[i] = item
        return array.reshape(dims)
    if datatype == "BOOL":
        if not all(isinstance(item, bool) for item in flat):
            raise BadInput(f"{where}: BOOL elements are true or false")
        return np.array(flat, dtype=bool).reshape(dims)
    return _numbers(flat, dtype, dims, datatype, where)


def _numbers(flat: list[Any], dtype: np.dtype, dims: tuple[int, ...], datatype: str, where: str) -> np.ndarray:
    """The numbers of a JSON tensor: numpy reads the list in one pass, and only a list it cannot
    read as plain numbers of the right kind is looked at item by item, for a precise message."""
    try:
        probe = np.array(flat)
    except (ValueError, TypeError, OverflowError):
        probe = None
    if probe is not None and probe.ndim == 1:
        if dtype.kind in "iu" and probe.dtype.kind in "iu":
            info = np.iinfo(dtype)
            if probe.size and (probe.min() < info.min or probe.max() > info.max):
                raise BadInput(f"{where}: a value is out of {datatype}'s range [{info.min}, {info.max}]")
            return probe.astype(dtype, copy=False).reshape(dims)
        if dtype.kind == "f" and probe.dtype.kind in "iuf" and (probe.size or not flat):
            with np.errstate(over="ignore"):
                array = probe.astype(dtype, copy=False)
            if not np.isfinite(array).all():
                raise BadInput(f"{where}: a value is out of {datatype}'s range")
            return array.reshape(dims)
    return _numbers_one_by_one(flat, dtype, dims, datatype, where)


def _numbers_one_by_one(
    flat: list[Any], dtype: np.dtype, dims: tuple[int, ...], datatype: str, where: str
) -> np.ndarray:
    if dtype.kind in "iu":
        if not all(type(item) is int for item in flat):
            raise BadInput(f"{where}: {datatype} elements are integers")
        info = np.iinfo(dtype)
        if flat and (min(flat) < info.min or max(flat) > info.max):
            raise BadInput(f"{where}: a value is out of {datatype}'s range [{info.min}, {info.max}]")
        return np.array(flat, dtype=dtype).reshape(dims)
    if not all(type(item) in (int, float) for item in flat):
        raise BadInput(f"{where}: {datatype} elements are numbers")
    with np.errstate(over="ignore"):
        array = np.array(flat, dtype=dtype)
    if not np.isfinite(array).all():
        raise BadInput(f"{where}: a value is out of {datatype}'s range")
    return array.reshape(dims)


def tensor_to_json(array: np.ndarray) -> list[Any]:
    """The flat `data` list of an array (BYTES as strings; bytes that are not UTF-8 cannot be
    JSON and ask for the binary extension)."""
    flat = array.reshape(-1)
    if array.dtype.kind in "OSU":
        out = []
        for item in flat.tolist():
            if isinstance(item, bytes):
                try:
                    item = item.decode("utf-8")
                except UnicodeDecodeError:
                    raise BadInput("a BYTES output is not UTF-8 text: ask for it in binary (binary_data)") from None
            elif not isinstance(item, str):
                item = str(item)
            out.append(item)
        return out
    return flat.tolist()


def tensor_from_binary(name: str, datatype: Any, shape: Any, raw: bytes | memoryview) -> np.ndarray:
    """The array a binary tensor's bytes hold: elements laid out row-major, little-endian."""
    where = f"input {name!r}"
    dims = _check_shape(shape, where)
    dtype = _dtype_of(datatype, where)
    count = math.prod(dims)
    if datatype != "BYTES":
        if len(raw) != count * dtype.itemsize:
            raise BadInput(
                f"{where}: shape {list(dims)} of {datatype} takes {count * dtype.itemsize} bytes, got {len(raw)}"
            )
        array = np.frombuffer(raw, dtype=dtype).reshape(dims)
        if datatype == "BOOL" and count and np.frombuffer(raw, dtype=np.uint8).max() > 1:
            raise BadInput(f"{where}: BOOL elements are bytes 0 or 1")
        return array
    array = np.empty(count, dtype=object)
    view, offset = memoryview(raw), 0
    for i in range(count):
        if offset + 4 > len(view):
            raise BadInput(f"{where}: BYTES data ends before element {i} of {count}")
        (length,) = struct.unpack_from("<I", view, offset)
        offset += 4
        if offset + length > len(view):
            raise BadInput(f"{where}: BYTES element {i} says {length} bytes, only {len(view) - offset} are left")
        item = bytes(view[offset : offset + length])
        offset += length
        try:
            array[i] = item.decode("utf-8")
        except UnicodeDecodeError:
            array[i] = item
    if offset != len(view):
        raise BadInput(f"{where}: {len(view) - offset} bytes are left after the {count} BYTES elements")
    return array.reshape(dims)


def tensor_to_binary(array: np.ndarray) -> bytes:
    """An array's bytes as the binary extension lays them out."""
    if array.dtype.kind in "OSU":
        parts = []
        for item in array.reshape(-1).tolist():
            data = item if isinstance(item, bytes) else str(item).encode("utf-8")
            parts.append(struct.pack("<I", len(data)))
            parts.append(data)
        return b"".join(parts)
    dtype = DTYPES[datatype_of(array)]
    return np.ascontiguousarray(array, dtype=dtype).tobytes()


# ---- whole messages ------------------------------------------------------------------------------


def decode_request(body: bytes, header_length: str | int | None = None) -> InferRequest:
    """An inference request: JSON, or a JSON header of `header_length` bytes followed by the
    binary data of the inputs that name a `binary_data_size`, in their order."""
    length = len(body)
    if header_length is not None:
        try:
            length = int(header_length)
        except ValueError:
            raise BadInput(f"{HEADER_LENGTH} must be a number of bytes, got {header_length!r}") from None
        if not 0 < length <= len(body):
            raise BadInput(f"{HEADER_LENGTH} is {length}, but the body has {len(body)} bytes")
    try:
        header = orjson.loads(body[:length])
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the request is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BadInput("the request must be a JSON object with 'inputs'")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise BadInput("the request needs 'inputs': a list of tensors, each with name, shape, datatype and data")
    binary, offset = memoryview(body)[length:], 0
    inputs, names = [], set()
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise BadInput(f"input {i} must be an object with a 'name'")
        name = item["name"]
        if name in names:
            raise BadInput(f"input {name!r} is given twice")
        names.add(name)
        parameters = _parameters(item.get("parameters"), f"input {name!r}")
        size = parameters.pop("binary_data_size", None)
        if size is not None:
            if not isinstance(size, int) or size < 0 or offset + size > len(binary):
                raise BadInput(f"input {name!r}: binary_data_size {size!r} goes past the request's binary data")
            array = tensor_from_binary(name, item.get("datatype"), item.get("shape"), binary[offset : offset + size])
            offset += size
        else:
            if "data" not in item:
                raise BadInput(f"input {name!r} has neither 'data' nor a binary_data_size")
            array = tensor_from_json(name, item.get("datatype"), item.get("shape"), item["data"])
        inputs.append(Tensor(name, array, parameters))
    if offset != len(binary):
        raise BadInput(f"{len(binary) - offset} bytes after the header belong to no input's binary_data_size")
    outputs = None
    if header.get("outputs") is not None:
        if not isinstance(header["outputs"], list):
            raise BadInput("'outputs' must be a list of objects with a 'name'")
        outputs = []
        for i, item in enumerate(header["outputs"]):
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise BadInput(f"output {i} must be an object with a 'name'")
            parameters = _parameters(item.get("parameters"), f"output {item['name']!r}")
            binary_flag = parameters.get("binary_data")
            outputs.append(RequestedOutput(item["name"], None if binary_flag is None else bool(binary_flag)))
    request_id = header.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise BadInput(f"'id' must be a string, got {type(request_id).__name__}")
    return InferRequest(inputs, request_id, _parameters(header.get("parameters"), "the request"), outputs)


def _parameters(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInput(f"{where}: parameters must be an object")
    return dict(value)


def encode_response(
    model_name: str,
    model_version: str,
    outputs: Sequence[Tensor],
    request_id: str | None = None,
    binary: Mapping[str, bool] | bool = False,
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an inference response; `binary` (for all outputs or by name)
    says which outputs go as binary data after the JSON header."""
    header: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        header["id"] = request_id
    tensors, chunks = [], []
    for tensor in outputs:
        as_binary = binary if isinstance(binary, bool) else binary.get(tensor.name, False)
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.array.shape),
        }
        if as_binary:
            data = tensor_to_binary(tensor.array)
            entry["parameters"] = {**tensor.parameters, "binary_data_size": len(data)}
            chunks.append(data)
        else:
            if tensor.parameters:
                entry["parameters"] = tensor.parameters
            entry["data"] = tensor_to_json(tensor.array)
        tensors.append(entry)
    header["outputs"] = tensors
    body = orjson.dumps(header, option=orjson.OPT_SERIALIZE_NUMPY)
    if not chunks:
        return body, {"Content-Type": "application/json"}
    return body + b"".join(chunks), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(body))}


def encode_request(
    inputs: Sequence[Tensor], binary: bool = False, request_id: str | None = None, **parameters: Any
) -> tuple[bytes, dict[str, str]]:
    """A request body as a client sends it (for tests and benchmarks; servers decode)."""
    header: dict[str, Any] = {"inputs": []}
    if request_id is not None:
        header["id"] = request_id
    if parameters:
        header["parameters"] = parameters
    chunks = []
    for tensor in inputs:
        entry: dict[str, Any] = {"name": tensor.name, "datatype": tensor.datatype, "shape": list(tensor.array.shape)}
        if binary:
            data = tensor_to_binary(tensor.array)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = tensor_to_json(tensor.array)
        header["inputs"].append(entry)
    body = orjson.dumps(header)
    if not binary:
        return body, {"Content-Type": "application/json"}
    return body + b"".join(chunks), {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(len(body))}


def decode_response(body: bytes, header_length: str | int | None = None) -> dict[str, np.ndarray]:
    """A response's outputs by name (for tests and benchmarks)."""
    length = int(header_length) if header_length is not None else len(body)
    header = orjson.loads(body[:length])
    binary, offset, out = memoryview(body)[length:], 0, {}
    for item in header["outputs"]:
        size = (item.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            out[item["name"]] = tensor_from_binary(
                item["name"], item["datatype"], item["shape"], binary[offset : offset + size]
            )
            offset += size
        else:
            out[item["name"]] = tensor_from_json(item["name"], item["datatype"], item["shape"], item["data"])
    return out
