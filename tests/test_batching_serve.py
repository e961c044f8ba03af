"""`raystore.batch` inside a Ray Serve replica, called through a DeploymentHandle."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from ray import serve

from raystore import batch

APP = "raystore_batching_test"


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
class ColumnModel:
    """Takes (features, rows) and answers (features, rows): rows are columns, batch_dim=1."""

    @batch(max_batch_size=32, max_latency_ms=30_000, batch_dim=1)
    async def predict(self, x: np.ndarray) -> np.ndarray:
        await asyncio.sleep(0.005)  # a per-batch overhead worth batching for
        return x * 2 + np.arange(x.shape[0])[:, None]

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        return await self.predict(x)

    def stats(self) -> dict:
        return self.predict.stats.as_dict()

    def records_ray_metrics(self) -> bool:
        from raystore._private.batching.serve_metrics import serve_replica_metrics

        return serve_replica_metrics("probe") is not None


@pytest.mark.ray
def test_serve_replica_batches_200_callers_along_dim_1(ray_session):
    handle = serve.run(ColumnModel.bind(), name=APP, route_prefix=None)
    try:
        payloads = [np.full((3, 1 + i % 4), float(i)) for i in range(200)]

        async def call_all():
            return await asyncio.gather(*(handle.remote(x) for x in payloads))

        results = asyncio.run(call_all())

        for i, (x, result) in enumerate(zip(payloads, results)):
            assert result.shape == x.shape, i
            np.testing.assert_array_equal(result, x * 2 + np.arange(3)[:, None])
        stats = handle.stats.remote().result()
        assert stats["requests"] == 200 and stats["rows"] == sum(x.shape[1] for x in payloads)
        assert stats["batches"] < 100 and max(stats["batch_sizes"]) <= 32
        assert stats["rejected"] == stats["expired"] == 0
        assert handle.records_ray_metrics.remote().result()
    finally:
        serve.delete(APP)


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.1})
class WhoAsked:
    """Answers, for each caller, the request ids its batch saw: raystore's accessor, Serve's own,
    and the request id the batch body itself runs under."""

    @batch(max_batch_size=8, max_latency_ms=30_000)
    async def ids(self, x: list) -> list:
        import raystore

        await asyncio.sleep(0.05)
        ours = [c.request_id for c in raystore.batch_request_contexts()]
        serves = [c.request_id for c in serve.context._get_serve_batch_request_context()]
        running_as = serve.context._get_serve_request_context().request_id
        return [(ours, serves, running_as)] * len(x)

    async def __call__(self, _) -> dict:
        own = serve.context._get_serve_request_context().request_id
        ours, serves, running_as = (await self.ids([0]))[0]
        return {"own": own, "ours": ours, "serves": serves, "running_as": running_as}

    @batch(max_batch_size=8, max_latency_ms=30_000, continuous=True)
    async def ids_stream(self, steps: list):
        """Each row streams `steps` pieces: the request ids its batch had at that step."""
        import raystore

        rows = [[n, 0] for n in steps]
        while rows:
            await asyncio.sleep(0.02)
            ours = [c.request_id for c in raystore.batch_request_contexts()]
            serves = [c.request_id for c in serve.context._get_serve_batch_request_context()]
            out = []
            for row in rows:
                row[1] += 1
                out.append((ours, serves) if row[1] <= row[0] else StopIteration)
            update = yield out
            rows = update.keep(rows)
            if update.joined:
                rows += [[n, 0] for n in update.joined["steps"]]

    async def streamed(self, steps: int) -> dict:
        own = serve.context._get_serve_request_context().request_id
        return {"own": own, "steps": [piece[0] async for piece in self.ids_stream([steps])]}


@pytest.mark.ray
def test_a_batch_sees_every_callers_request_context_and_runs_as_none_of_them(ray_session):
    handle = serve.run(WhoAsked.bind(), name="who_asked", route_prefix=None)
    try:

        async def call_all():
            return await asyncio.gather(*(handle.remote(i) for i in range(24)))

        answers = asyncio.run(call_all())
        owns = {a["own"] for a in answers}
        assert len(owns) == 24 and "" not in owns
        for a in answers:
            assert a["own"] in a["ours"]  # its own request is in its batch's contexts
            assert a["serves"] == a["ours"]  # and Serve's accessor says the same
            assert a["running_as"] not in owns  # the batch body runs as none of its callers
        assert max(len(a["ours"]) for a in answers) > 1  # batches did hold several callers
        batches = {tuple(a["ours"]) for a in answers}
        assert sorted(i for b in batches for i in b) == sorted(owns)  # each caller in exactly one batch
    finally:
        serve.delete("who_asked")


@pytest.mark.ray
def test_each_step_of_a_continuous_batch_sees_the_contexts_of_the_callers_then_in_it(ray_session):
    handle = serve.run(WhoAsked.bind(), name="who_streams", route_prefix=None)
    try:

        async def call_all():
            calls = []
            for i in range(12):
                calls.append(handle.streamed.remote(2 + i % 5))
                await asyncio.sleep(0.01)  # arrivals spread over the first steps: joins
            return await asyncio.gather(*calls)

        answers = asyncio.run(call_all())
        assert [len(a["steps"]) for a in answers] == [2 + i % 5 for i in range(12)]
        for a in answers:
            for ours, serves in a["steps"]:
                assert a["own"] in ours and serves == ours
        step_sets = {tuple(ours) for a in answers for ours, _ in a["steps"]}
        assert len(step_sets) > 1  # the batch's members changed between steps
    finally:
        serve.delete("who_streams")
