"""A service exercising every IO descriptor and error path (imported by the ingress replica)."""

import asyncio

import numpy as np
import pydantic

import raystore
from raystore.io import JSON, File, NumpyNdarray, Text


class Arithmetic(raystore.Runnable):
    @raystore.Runnable.method(batchable=True, batch_dim=0)
    def scale(self, x: np.ndarray) -> np.ndarray:
        return x * 10

    @raystore.Runnable.method
    def boom(self, message: str) -> str:
        raise ValueError(message)


served_runner = raystore.Runner(Arithmetic, name="arith", resources={"num_cpus": 0.05}, max_latency_ms=2000)
embedded_runner = raystore.Runner(Arithmetic, name="arith_embedded", embedded=True)

svc = raystore.Service("everything", runners=[served_runner, embedded_runner], max_body_bytes=4096)


class Order(pydantic.BaseModel):
    item: str
    quantity: int = pydantic.Field(gt=0)


@svc.api(input=NumpyNdarray(dtype="float32", shape=(-1, 3), enforce_shape=True), output=NumpyNdarray())
async def scale(x: np.ndarray) -> np.ndarray:
    """Multiply every value by 10 (served runner, batched)."""
    return await served_runner.scale.async_run(x)


@svc.api(input=NumpyNdarray(dtype="int64", enforce_dtype=True), output=NumpyNdarray(), route="/v2/scale-embedded")
async def scale_embedded(x: np.ndarray) -> np.ndarray:
    return await embedded_runner.scale.async_run(x)


# A runner method itself as the API function: a plain function returning a coroutine.
svc.api(input=NumpyNdarray(dtype="float32"), output=NumpyNdarray(), name="scale_direct")(
    embedded_runner.scale.async_run
)


@svc.api(input=JSON(pydantic_model=Order), output=JSON())
def order(o: Order) -> dict:
    return {"item": o.item.upper(), "total": o.quantity * 2}


@svc.api(input=JSON(), output=JSON())
async def echo(value):
    return {"got": value}


@svc.api(input=Text(), output=Text())
def shout(text: str) -> str:
    return text.upper() + "!"


@svc.api(input=File(), output=File())
def reverse_bytes(data: bytes) -> bytes:
    return data[::-1]


@svc.api(input=Text(), output=Text())
async def fail(message: str) -> str:
    return await served_runner.boom.async_run(message)


@svc.api(input=Text(), output=Text())
async def overloaded(message: str) -> str:
    raise raystore.ServiceUnavailable("queue full", retry_after_s=2.4)


@svc.api(input=JSON(), output=JSON())
async def slow_echo(value):
    await asyncio.sleep(0.05)
    return value


from raystore.io import Image, Multipart, PandasDataFrame  # noqa: E402


@svc.api(input=PandasDataFrame(orient="records", columns=["a", "b"]), output=PandasDataFrame(orient="records"))
def add_columns(frame):
    return frame.assign(total=frame["a"] + frame["b"])


@svc.api(input=Image(), output=Image(format="PNG"))
def grayscale(image):
    return image.convert("L")


@svc.api(
    input=Multipart(image=Image(), factor=NumpyNdarray(dtype="float64")),
    output=Multipart(size=JSON(), factor=NumpyNdarray()),
)
def describe_image(parts):
    return {"size": list(parts["image"].size), "factor": parts["factor"] * 2}
