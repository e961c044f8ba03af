"""A service with a runner embedded in its ingress and one served apart, for `raystore perf
--tune` and the tunable host (imported by the test and by the replicas)."""

import asyncio
import os

import raystore
from raystore.io import JSON


class Doubler(raystore.Runnable):
    @raystore.Runnable.method(batchable=True)
    async def double(self, xs: list) -> list:
        await asyncio.sleep(0.002)  # a model's time per batch: callers arriving meanwhile share the next one
        return [2 * x for x in xs]

    @raystore.Runnable.method
    async def pid(self, _: object = None) -> int:
        return os.getpid()


inline = raystore.Runner(Doubler, name="inline", embedded=True, max_batch_size=4, max_latency_ms=100)
# colocated: `pid` answers from the replica that runs `double`
apart = raystore.Runner(
    Doubler, name="apart", resources={"num_cpus": 0.05}, max_batch_size=4, max_latency_ms=100, colocate=True
)
svc = raystore.Service("tune_target", runners=[inline, apart])


@svc.api(input=JSON(), output=JSON())
async def double(x: float) -> dict:
    (near,), (far,) = await asyncio.gather(inline.double.async_run([x]), apart.double.async_run([x]))
    return {"inline": near, "apart": far}


@svc.api(input=JSON(), output=JSON())
async def pids(_: object = None) -> dict:
    """The process of this ingress replica and of the `apart` replica that answered."""
    return {"ingress": os.getpid(), "apart": await apart.pid.async_run()}
