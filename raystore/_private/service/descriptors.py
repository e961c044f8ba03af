"""IO descriptors: how an API parses and validates its request body and renders its result, and how
it describes both in OpenAPI. `raystore.io` re-exports them."""

from __future__ import annotations

import importlib
import io
import json
import math
import re
import uuid
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from raystore.exceptions import BadInput, InvalidArgument, InvalidOutput, MissingDependency, UnsupportedMediaType

# How a streaming API's pieces travel, by an output descriptor's `stream=`; see `service.streams`.
STREAM_MEDIA_TYPES = {"sse": "text/event-stream", "jsonl": "application/jsonl", "text": "text/plain"}


class IODescriptor:
    """Base class: parse a request into a Python value, render a value into a response."""

    media_type = "application/octet-stream"
    stream: str | None = None  # as an output: how an async generator API's pieces are sent; None: not streamed
    stream_formats: tuple[str, ...] = ()  # the stream formats it can render pieces for

    def piece(self, value: Any) -> str:
        """One piece of a streamed answer as text (an SSE event's data, a JSON line)."""
        raise NotImplementedError

    def _set_stream(self, stream: bool | str) -> None:
        """Validate `stream=` (True: Server-Sent Events, the first format) and remember it."""
        if stream is False or stream is None:
            self.stream = None
            return
        if stream is True:
            stream = self.stream_formats[0]
        if stream not in self.stream_formats:
            raise InvalidArgument(
                f"{type(self).__name__}(stream=...) must be True, False or one of {list(self.stream_formats)}, "
                f"got {stream!r}"
            )
        self.stream = stream

    async def from_http(self, request: Request, body: bytes) -> Any:
        raise NotImplementedError

    def to_http(self, value: Any) -> Response:
        raise NotImplementedError

    def openapi_schema(self) -> dict[str, Any]:
        return {}

    def openapi_content(self) -> dict[str, Any]:
        if self.stream is not None:
            return self._openapi_stream_content()
        return {self.media_type: {"schema": self.openapi_schema()}}

    def _openapi_stream_content(self) -> dict[str, Any]:
        # OpenAPI 3.1 has no schema for the items of a stream (3.2's itemSchema): the body is a
        # string, and each piece's schema is named in an extension and the description.
        framing = {
            "sse": "Server-Sent Events: one `data:` event per piece; a failure mid-stream ends it with an "
            '`event: error` whose data is {"error": ...}',
            "jsonl": 'JSON lines: one JSON document per piece; a failure mid-stream ends it with a line {"error": ...}',
            "text": "plain text, each piece as it is made",
        }[self.stream]
        return {
            STREAM_MEDIA_TYPES[self.stream]: {
                "schema": {"type": "string", "description": f"A stream of pieces, as {framing}."},
                "x-raystore-stream": {"format": self.stream, "itemSchema": self.openapi_schema()},
            }
        }

    def _check_content_type(self, request: Request, accepted: tuple[str, ...]) -> None:
        content_type = content_type_of(request)
        if content_type and content_type not in accepted:
            raise UnsupportedMediaType(f"expected a body of type {' or '.join(accepted)}, got {content_type!r}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def content_type_of(request: Request) -> str:
    """The request's media type, lowercase, without parameters ('' when none was sent)."""
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def _json_body(body: bytes) -> Any:
    """The JSON document in `body`, with only finite numbers: NaN, Infinity and numbers beyond a
    64-bit float are refused here, before they reach the API as values it cannot use."""
    if not body:
        raise BadInput("the request body is empty; send a JSON document")
    if not _LONG_DIGITS.search(body):  # orjson turns integers beyond 64 bits into floats, silently
        try:
            return orjson.loads(body)  # about 4x faster than json.loads on a small array
        except orjson.JSONDecodeError:
            pass  # what orjson refuses (non-finite numbers, say) the standard parser explains
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except BadInput:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise BadInput(f"the request body is not valid JSON: {exc}") from None


_LONG_DIGITS = re.compile(rb"\d{19,}")


def _refuse_constant(name: str) -> Any:
    raise BadInput(f"the JSON holds {name}, which is not a number; send finite numbers (null for a missing value)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadInput(f"the number {text[:40]} is out of range for a 64-bit float")
    return value


def _json_kind(value: Any) -> str:
    kinds = {dict: "an object", str: "a string", type(None): "null", bool: "a boolean"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _numbers_response(rows: list) -> Response:
    """Nested lists of numbers as a JSON response, rendered by orjson (about 10x faster than
    Starlette's `json.dumps` for a small array). orjson writes NaN and infinities as null, where
    `JSONResponse` refuses them as invalid JSON; such results keep `JSONResponse`'s answer."""
    try:
        body = orjson.dumps(rows)
    except TypeError:  # an integer over 64 bits
        return JSONResponse(rows)
    if b"null" in body:  # only a non-finite float renders as null here
        return JSONResponse(rows)
    return Response(body, media_type="application/json")


class NumpyNdarray(IODescriptor):
    """A numpy array sent and returned as (nested) JSON lists."""

    media_type = "application/json"

    def __init__(
        self,
        dtype: Any = None,
        shape: tuple[int, ...] | None = None,
        enforce_dtype: bool = False,
        enforce_shape: bool = False,
        stream: bool | str = False,
    ):
        """`stream`, as an output: an async generator API's arrays are sent one by one, as
        Server-Sent Events (`True` or `"sse"`) or JSON lines (`"jsonl"`)."""
        self._set_stream(stream)
        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.shape = tuple(shape) if shape is not None else None
        self.enforce_dtype, self.enforce_shape = enforce_dtype, enforce_shape
        if enforce_dtype and self.dtype is None:
            raise InvalidArgument("enforce_dtype=True needs a dtype")
        if enforce_shape and self.shape is None:
            raise InvalidArgument("enforce_shape=True needs a shape")

    async def from_http(self, request: Request, body: bytes) -> Any:
        self._check_content_type(request, ("application/json",))
        data = _json_body(body)
        if not isinstance(data, (list, int, float)):
            raise BadInput(
                f"expected a JSON array of numbers (nested arrays for more dimensions), got {_json_kind(data)}"
            )
        try:
            array = np.asarray(data)
        except ValueError:  # numpy: "inhomogeneous shape"
            raise BadInput("the JSON is not a rectangular array: its rows have different lengths or depths") from None
        if array.dtype == object:
            raise BadInput("expected numbers: the array holds null, or an integer beyond 64 bits")
        if array.dtype.kind in "US" and self.dtype is not None and self.dtype.kind in "biuf":
            array = _numbers_from_strings(array, self.dtype)  # ["1.5", "2"] for a float API, as before
        elif array.dtype.kind not in "biuf":
            raise BadInput(f"expected an array of numbers, got {_ARRAY_KINDS.get(array.dtype.kind, array.dtype)}")
        if self.dtype is not None:
            if self.enforce_dtype and not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
                raise BadInput(f"expected an array of {self.dtype}, got {array.dtype}")
            array = _cast(array, self.dtype)
        if self.enforce_shape and not _shape_matches(array.shape, self.shape):
            wanted = (
                "("
                + ", ".join("any" if d == -1 else str(d) for d in self.shape)
                + ("," if len(self.shape) == 1 else "")
                + ")"
            )
            raise BadInput(f"expected an array of shape {wanted}, got {array.shape}")
        return array

    stream_formats = ("sse", "jsonl")

    def to_http(self, value: Any) -> Response:
        if hasattr(value, "detach"):  # torch tensors list themselves (from any device), no numpy copy
            return _numbers_response(value.tolist())
        return _numbers_response(np.asarray(value).tolist())

    def piece(self, value: Any) -> str:
        rows = value.tolist() if hasattr(value, "detach") else np.asarray(value).tolist()
        return json.dumps(rows, allow_nan=False, separators=(",", ":"))

    def openapi_schema(self) -> dict[str, Any]:
        """Arrays as deep as `shape` says; without a shape, a number or arrays of any depth (a
        model may answer `[2]`, `[[0.1, 0.9]]` or `2.5`)."""
        item: dict[str, Any] = {"type": "number"}
        if self.dtype is not None and self.dtype.kind in "iub":
            item = {"type": "integer"}
        if self.shape is None:
            name = "NDArrayOfIntegers" if item["type"] == "integer" else "NDArray"
            ref = {"$ref": f"#/components/schemas/{name}"}
            return {**ref, "$defs": {name: {"anyOf": [item, {"type": "array", "items": ref}]}}}
        schema: dict[str, Any] = item
        for _ in range(len(self.shape)):
            schema = {"type": "array", "items": schema}
        return schema


_ARRAY_KINDS = {"U": "strings", "S": "strings", "c": "complex numbers", "M": "dates", "m": "durations"}


def _numbers_from_strings(array: Any, dtype: Any) -> Any:
    try:
        numbers = array.astype(np.float64)
    except ValueError as exc:
        raise BadInput(f"cannot convert the array to {dtype}: {exc}") from None
    if not np.isfinite(numbers).all():
        raise BadInput(f"a number is out of range for {dtype}, or not a number")
    return numbers


def _cast(array: Any, dtype: Any) -> Any:
    """`array` as `dtype`, refusing what would not fit (numpy would wrap integers around and turn
    large floats into infinities without a word)."""
    if dtype.kind in "iu" and array.size and array.dtype.kind in "iuf":
        limits = np.iinfo(dtype)
        low, high = array.min(), array.max()
        if low < limits.min or high > limits.max:
            raise BadInput(
                f"a number is out of range for {dtype} ({limits.min} to {limits.max}): {low if low < limits.min else high}"
            )
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            cast = array.astype(dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadInput(f"cannot convert the array to {dtype}: {exc}") from None
    if cast.dtype.kind == "f" and not np.isfinite(cast).all():
        raise BadInput(f"a number is out of range for {dtype}")
    return cast


def _shape_matches(actual: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    return len(actual) == len(wanted) and all(w == -1 or a == w for a, w in zip(actual, wanted))


class JSON(IODescriptor):
    """Any JSON document, or one validated by a pydantic model: as an input, the request's body; as
    an output, the API's result (a model instance, or what the model validates), so that responses
    match their documented schema."""

    media_type = "application/json"
    stream_formats = ("sse", "jsonl")

    def __init__(self, pydantic_model: Any = None, stream: bool | str = False):
        """`stream`, as an output: an async generator API's values are sent one by one, as
        Server-Sent Events (`True` or `"sse"`) or JSON lines (`"jsonl"`)."""
        self.pydantic_model = pydantic_model
        self._set_stream(stream)

    async def from_http(self, request: Request, body: bytes) -> Any:
        self._check_content_type(request, ("application/json",))
        data = _json_body(body)
        if self.pydantic_model is None:
            return data
        import pydantic

        try:
            return self.pydantic_model.model_validate(data)
        except pydantic.ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors())
            raise BadInput(f"the JSON does not match {self.pydantic_model.__name__}: {problems}") from None

    def to_http(self, value: Any) -> Response:
        return JSONResponse(self._jsonable(value))

    def piece(self, value: Any) -> str:
        return json.dumps(self._jsonable(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))

    def _jsonable(self, value: Any) -> Any:
        """The result as plain JSON values, checked against the pydantic model when there is one."""
        if self.pydantic_model is not None and not isinstance(value, self.pydantic_model):
            # As an output, the model is a promise the OpenAPI document makes: keep it.
            import pydantic

            try:
                # Objects with the fields as attributes (another model, a dataclass) and dicts by
                # field name or alias all do.
                value = self.pydantic_model.model_validate(value, from_attributes=True, by_alias=True, by_name=True)
            except pydantic.ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'result'}: {e['msg']}" for e in exc.errors())
                raise InvalidOutput(
                    f"the API's result does not match {self.pydantic_model.__name__}: {problems}"
                ) from None
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json", by_alias=True)
        elif hasattr(value, "tolist"):
            value = value.tolist()
        return value

    def openapi_schema(self) -> dict[str, Any]:
        if self.pydantic_model is not None:
            # Nested models land in the document's components (see openapi.py), not in `$defs` here.
            return self.pydantic_model.model_json_schema(ref_template="#/components/schemas/{model}")
        return {}


class Text(IODescriptor):
    """Plain UTF-8 text."""

    media_type = "text/plain"
    stream_formats = ("sse", "text")

    def __init__(self, stream: bool | str = False):
        """`stream`, as an output: an async generator API's strings are sent one by one, as
        Server-Sent Events (`True` or `"sse"`) or as plain text written as it comes (`"text"`)."""
        self._set_stream(stream)

    def piece(self, value: Any) -> str:
        return str(value)

    async def from_http(self, request: Request, body: bytes) -> Any:
        content_type = content_type_of(request)
        if content_type and not content_type.startswith("text/"):
            raise UnsupportedMediaType(f"expected a text body (text/plain), got {content_type!r}")
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadInput(f"the body is not UTF-8 text: {exc}") from None

    def to_http(self, value: Any) -> Response:
        return PlainTextResponse(str(value))

    def openapi_schema(self) -> dict[str, Any]:
        return {"type": "string"}


class File(IODescriptor):
    """Raw bytes in, raw bytes out."""

    def __init__(self, media_type: str = "application/octet-stream"):
        self.media_type = media_type

    async def from_http(self, request: Request, body: bytes) -> Any:
        return body

    def to_http(self, value: Any) -> Response:
        if isinstance(value, str):
            value = value.encode()
        if not isinstance(value, (bytes, bytearray)):
            raise InvalidOutput(f"a File output must be bytes, got {type(value).__name__}")
        return Response(bytes(value), media_type=self.media_type)

    def openapi_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "binary"}


class PandasDataFrame(IODescriptor):
    """A pandas DataFrame as JSON (`orient` as in `DataFrame.to_json`), or CSV when sent as text/csv."""

    media_type = "application/json"
    _ORIENTS = ("records", "split", "index", "columns", "values", "table")

    def __init__(self, orient: str = "records", columns: list[str] | None = None):
        if orient not in self._ORIENTS:
            raise InvalidArgument(f"orient must be one of {self._ORIENTS}, got {orient!r}")
        self.orient, self.columns = orient, list(columns) if columns else None

    async def from_http(self, request: Request, body: bytes) -> Any:
        pd = _optional("pandas", "PandasDataFrame")
        content_type = content_type_of(request)

        try:
            if content_type == "text/csv":
                frame = pd.read_csv(io.BytesIO(body))
            else:
                self._check_content_type(request, ("application/json",))
                _json_body(body)  # a clear message for malformed JSON before pandas' own
                frame = pd.read_json(io.StringIO(body.decode("utf-8")), orient=self.orient)
        except BadInput:
            raise
        except Exception as exc:  # pandas raises many unrelated types for data it cannot read
            raise BadInput(f"cannot read a DataFrame (orient={self.orient!r}) from the body: {exc}") from None
        if frame.select_dtypes("number").isin([np.inf, -np.inf]).any().any():  # "inf" in a CSV, say
            raise BadInput("the DataFrame holds an infinite number; send finite numbers (empty for a missing value)")
        if self.columns is not None:
            missing = [c for c in self.columns if c not in frame.columns]
            if missing:
                raise BadInput(f"the DataFrame lacks columns {missing}; expected {self.columns}")
            frame = frame[self.columns]
        return frame

    def to_http(self, value: Any) -> Response:
        pd = _optional("pandas", "PandasDataFrame")
        if not isinstance(value, pd.DataFrame):
            value = pd.DataFrame(value)
        return Response(value.to_json(orient=self.orient), media_type="application/json")

    def openapi_schema(self) -> dict[str, Any]:
        if self.orient == "records":
            row: dict[str, Any] = {"type": "object"}
            if self.columns:
                row["required"] = self.columns
            return {"type": "array", "items": row}
        return {"type": "object"} if self.orient != "values" else {"type": "array"}


class Image(IODescriptor):
    """An image file (PNG, JPEG, ...) in, as a PIL image; a PIL image or array out, as `format`."""

    media_type = "image/png"

    def __init__(self, format: str = "PNG"):  # noqa: A002 - mirrors PIL's argument name
        self.format = format.upper()
        self.media_type = f"image/{'jpeg' if self.format in ('JPG', 'JPEG') else self.format.lower()}"

    async def from_http(self, request: Request, body: bytes) -> Any:
        pil = _optional("PIL.Image", "Image")
        content_type = content_type_of(request)
        if content_type and not content_type.startswith("image/") and content_type != "application/octet-stream":
            raise UnsupportedMediaType(f"expected an image body (image/png, image/jpeg, ...), got {content_type!r}")

        try:
            image = pil.open(io.BytesIO(body))
            image.load()
        except Exception as exc:  # PIL raises several unrelated types for undecodable data
            raise BadInput(f"the body is not an image PIL can read: {exc}") from None
        return image

    def to_http(self, value: Any) -> Response:
        pil = _optional("PIL.Image", "Image")
        if not isinstance(value, pil.Image):
            value = pil.fromarray(value)

        buffer = io.BytesIO()
        value.save(buffer, format=self.format)
        return Response(buffer.getvalue(), media_type=self.media_type)

    def openapi_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "binary"}

    def openapi_content(self) -> dict[str, Any]:
        return {"image/*": {"schema": self.openapi_schema()}}


class _FieldRequest:
    """What a descriptor reads from a request, for one part of a multipart body."""

    def __init__(self, content_type: str):
        self.headers = {"content-type": content_type}


class Multipart(IODescriptor):
    """Several named inputs (or outputs) in one multipart/form-data body, each with its own descriptor;
    the API function receives (or returns) a dict of them."""

    media_type = "multipart/form-data"

    def __init__(self, **fields: IODescriptor):
        if not fields:
            raise InvalidArgument("Multipart needs at least one field, e.g. Multipart(image=Image(), meta=JSON())")
        for name, descriptor in fields.items():
            if not isinstance(descriptor, IODescriptor) or isinstance(descriptor, Multipart):
                raise InvalidArgument(f"field {name!r} must be a (non-multipart) IO descriptor, got {descriptor!r}")
        self.fields = fields

    async def from_http(self, request: Request, body: bytes) -> Any:
        self._check_content_type(request, ("multipart/form-data",))
        try:
            form = await request.form()
        except Exception as exc:  # malformed boundaries and the like
            raise BadInput(f"cannot parse the multipart body: {exc}") from None
        missing = [name for name in self.fields if name not in form]
        if missing:
            raise BadInput(f"the multipart body lacks fields {missing}; expected {list(self.fields)}")
        values = {}
        for name, descriptor in self.fields.items():
            part = form[name]
            if hasattr(part, "read"):  # an uploaded file
                data, content_type = await part.read(), part.content_type or ""
            else:
                data, content_type = str(part).encode(), ""
            try:
                values[name] = await descriptor.from_http(_FieldRequest(content_type), data)  # type: ignore[arg-type]
            except BadInput as exc:
                raise BadInput(f"field {name!r}: {exc}") from None
        return values

    def to_http(self, value: Any) -> Response:
        if not isinstance(value, dict) or set(value) != set(self.fields):
            raise InvalidOutput(f"a Multipart output must be a dict with keys {list(self.fields)}")
        boundary = uuid.uuid4().hex
        parts = []
        for name, descriptor in self.fields.items():
            rendered = descriptor.to_http(value[name])
            media = rendered.headers.get("content-type", "application/octet-stream")
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\nContent-Type: {media}\r\n\r\n'.encode()
                + rendered.body
                + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        return Response(body, media_type=f"multipart/form-data; boundary={boundary}")

    def openapi_schema(self) -> dict[str, Any]:
        return {
            "type": "object",
            "properties": {n: d.openapi_schema() for n, d in self.fields.items()},
            "required": list(self.fields),
        }


def _optional(module: str, descriptor: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        package = {"pandas": "pandas", "PIL.Image": "pillow"}[module]
        raise MissingDependency(
            f"raystore.io.{descriptor} needs the {package} package: pip install {package}"
        ) from None
