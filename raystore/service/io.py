"""IO descriptors: how an API parses and validates its request body and renders its result, and how
it describes both in OpenAPI. `raystore.io` re-exports them."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from raystore.service.errors import BadInput, UnsupportedMediaType


class IODescriptor:
    """Base class: parse a request into a Python value, render a value into a response."""

    media_type = "application/octet-stream"

    async def from_http(self, request: Request, body: bytes) -> Any:
        raise NotImplementedError

    def to_http(self, value: Any) -> Response:
        raise NotImplementedError

    def openapi_schema(self) -> dict[str, Any]:
        return {}

    def openapi_content(self) -> dict[str, Any]:
        return {self.media_type: {"schema": self.openapi_schema()}}

    def _check_content_type(self, request: Request, accepted: tuple[str, ...]) -> None:
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type and content_type not in accepted:
            raise UnsupportedMediaType(
                f"expected a body of type {' or '.join(accepted)}, got {content_type!r}", status_code=400
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _json_body(body: bytes) -> Any:
    if not body:
        raise BadInput("the request body is empty; send a JSON document")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadInput(f"the request body is not valid JSON: {exc}") from None


class NumpyNdarray(IODescriptor):
    """A numpy array sent and returned as (nested) JSON lists."""

    media_type = "application/json"

    def __init__(self, dtype: Any = None, shape: tuple[int, ...] | None = None, enforce_dtype: bool = False,
                 enforce_shape: bool = False):
        import numpy as np

        self.dtype = np.dtype(dtype) if dtype is not None else None
        self.shape = tuple(shape) if shape is not None else None
        self.enforce_dtype, self.enforce_shape = enforce_dtype, enforce_shape
        if enforce_dtype and self.dtype is None:
            raise ValueError("enforce_dtype=True needs a dtype")
        if enforce_shape and self.shape is None:
            raise ValueError("enforce_shape=True needs a shape")

    async def from_http(self, request: Request, body: bytes) -> Any:
        import numpy as np

        self._check_content_type(request, ("application/json",))
        data = _json_body(body)
        try:
            array = np.asarray(data)
        except ValueError as exc:
            raise BadInput(f"the JSON is not a rectangular array: {exc}") from None
        if array.dtype == object:
            raise BadInput("the JSON is not a rectangular array of numbers (rows of different lengths?)")
        if self.dtype is not None:
            if self.enforce_dtype and not np.can_cast(array.dtype, self.dtype, casting="same_kind"):
                raise BadInput(f"expected an array of {self.dtype}, got {array.dtype}")
            try:
                array = array.astype(self.dtype)
            except (ValueError, TypeError) as exc:
                raise BadInput(f"cannot convert the array to {self.dtype}: {exc}") from None
        if self.enforce_shape and not _shape_matches(array.shape, self.shape):
            wanted = "(" + ", ".join("any" if d == -1 else str(d) for d in self.shape) + ("," if len(self.shape) == 1 else "") + ")"
            raise BadInput(f"expected an array of shape {wanted}, got {array.shape}")
        return array

    def to_http(self, value: Any) -> Response:
        import numpy as np

        if hasattr(value, "detach"):  # torch tensors
            value = value.detach().cpu().numpy()
        return JSONResponse(np.asarray(value).tolist())

    def openapi_schema(self) -> dict[str, Any]:
        item: dict[str, Any] = {"type": "number"}
        if self.dtype is not None and self.dtype.kind in "iub":
            item = {"type": "integer"}
        depth = len(self.shape) if self.shape else 2
        schema: dict[str, Any] = item
        for _ in range(depth):
            schema = {"type": "array", "items": schema}
        return schema


def _shape_matches(actual: tuple[int, ...], wanted: tuple[int, ...]) -> bool:
    return len(actual) == len(wanted) and all(w == -1 or a == w for a, w in zip(actual, wanted))


class JSON(IODescriptor):
    """Any JSON document, or one validated by a pydantic model."""

    media_type = "application/json"

    def __init__(self, pydantic_model: Any = None):
        self.pydantic_model = pydantic_model

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
        if hasattr(value, "model_dump"):
            value = value.model_dump(mode="json")
        elif hasattr(value, "tolist"):
            value = value.tolist()
        return JSONResponse(value)

    def openapi_schema(self) -> dict[str, Any]:
        if self.pydantic_model is not None:
            # Nested models land in the document's components (see openapi.py), not in `$defs` here.
            return self.pydantic_model.model_json_schema(ref_template="#/components/schemas/{model}")
        return {}


class Text(IODescriptor):
    """Plain UTF-8 text."""

    media_type = "text/plain"

    async def from_http(self, request: Request, body: bytes) -> Any:
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
            raise TypeError(f"a File output must be bytes, got {type(value).__name__}")
        return Response(bytes(value), media_type=self.media_type)

    def openapi_schema(self) -> dict[str, Any]:
        return {"type": "string", "format": "binary"}
