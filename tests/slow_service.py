"""A service whose API takes as long as it is told to, and one that fails: for the tests of how
`raystore serve` stops and what it logs."""

import asyncio

import raystore
from raystore.io import JSON

svc = raystore.Service("slow")


@svc.api(input=JSON(), output=JSON())
async def wait(body):
    await asyncio.sleep(float(body["seconds"]))
    return {"waited": body["seconds"]}


@svc.api(input=JSON(), output=JSON())
def broken(body):
    raise ValueError(f"broken on purpose: {body}")
