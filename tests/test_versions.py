"""Many versions of one model behind one runner (`raystore.models.runner_for`): each call names
its version (exact, alias, latest), a replica holds a bounded number and evicts the least recently
used idle one, in process and served by a real Ray."""

import asyncio
import re
import sys
import time
import urllib.request

import numpy as np
import pytest

import raystore
from raystore.exceptions import InvalidArgument, NotFound


class Answer:
    """Answers every row with its own number `k`, after `delay_s`: versions are told apart by value."""

    def __init__(self, k, delay_s=0.0):
        self.k, self.delay_s = k, delay_s

    def __call__(self, x):
        if self.delay_s:
            time.sleep(self.delay_s)
        return np.zeros((len(x), 1)) + self.k


def save_answer(k, delay_s=0.0):
    return raystore.picklable_model.save_model(
        "answer",
        Answer(k, delay_s),
        signatures={"__call__": {"batchable": True}},
        external_modules=[sys.modules[__name__]],
    ).tag


def _lru_loads(trace, capacity):
    held, loads = [], 0
    for item in trace:
        if item in held:
            held.remove(item)
        else:
            loads += 1
            if len(held) == capacity:
                held.pop(0)
        held.append(item)
    return loads


def test_versions_in_process_load_on_use_and_evict_the_least_recently_used():
    tags = [save_answer(k) for k in range(4)]
    runner = raystore.models.runner_for("answer", max_models_per_replica=2).init_local()
    try:
        trace = [0, 1, 0, 1, 2, 3, 2, 3, 0, 1]
        for i in trace:
            assert runner.run(np.zeros((2, 1)), version=tags[i].version).ravel().tolist() == [i, i]
        stats = runner._backend.pool.stats()
        assert stats["loads"] == _lru_loads(trace, 2) == 6 and stats["evictions"] == 4
        assert stats["held"] == [tags[0].version, tags[1].version]
        assert runner.run(np.zeros((1, 1))).item() == 3  # no version: latest
        raystore.models.set_alias(tags[2], "prod")
        assert runner.run(np.zeros((1, 1)), version="prod").item() == 2
        with pytest.raises(NotFound, match="no version or alias 'nope'"):
            runner.run(np.zeros((1, 1)), version="nope")
    finally:
        runner.destroy_local()
    with pytest.raises(InvalidArgument, match="max_models_per_replica"):
        raystore.models.runner_for("answer", max_models_per_replica=0)
    with pytest.raises(NotFound):
        raystore.models.runner_for("no_such_model")


def test_concurrent_first_calls_load_a_version_once_and_batches_never_mix_versions():
    tags = [save_answer(k) for k in range(3)]
    runner = raystore.models.runner_for("answer", max_models_per_replica=3, max_latency_ms=50).init_local()

    async def calls():
        return await asyncio.gather(
            *[runner.async_run(np.zeros((1, 1)), version=tags[j % 3].version) for j in range(90)]
        )

    try:
        answers = asyncio.run(calls())
        assert [a.item() for a in answers] == [j % 3 for j in range(90)]
        assert runner._backend.pool.stats()["loads"] == 3
    finally:
        runner.destroy_local()


class Unloadable:
    def __init__(self):
        self.weights = [1.0]

    def __call__(self, x):
        return x

    def __setstate__(self, state):
        raise RuntimeError("cannot load here")


def test_a_failed_load_leaves_room_and_sync_and_async_calls_mix(iris):
    good = save_answer(5)
    bad = raystore.picklable_model.save_model(
        "answer", Unloadable(), signatures={"__call__": {"batchable": True}}, external_modules=[sys.modules[__name__]]
    ).tag
    runner = raystore.models.runner_for("answer", max_models_per_replica=1).init_local()

    async def both():
        # the failing load holds the one slot while the good one waits for room: it must not hang
        failing = asyncio.ensure_future(runner.async_run(np.zeros((1, 1)), version=bad.version))
        working = asyncio.ensure_future(runner.async_run(np.zeros((1, 1)), version=good.version))
        done, _ = await asyncio.wait([failing, working], timeout=30)
        return failing, working, done

    try:
        failing, working, done = asyncio.run(both())
        assert len(done) == 2, "a load waiting for room hung after another load failed"
        with pytest.raises(RuntimeError, match="cannot load here"):
            failing.result()
        assert working.result().item() == 5
        assert runner.run(np.zeros((1, 1)), version=good.version).item() == 5  # sync, after async
    finally:
        runner.destroy_local()


def test_a_version_drained_for_eviction_is_evicted_even_when_another_goes_idle_first():
    slow, slower = save_answer(1, delay_s=0.5), save_answer(2, delay_s=1.0)
    third = save_answer(3)
    runner = raystore.models.runner_for("answer", max_models_per_replica=2, max_latency_ms=1).init_local()

    async def calls():
        x = np.zeros((1, 1))
        first = asyncio.ensure_future(runner.async_run(x, version=slower.version))  # least recently asked
        await asyncio.sleep(0.2)
        second = asyncio.ensure_future(runner.async_run(x, version=slow.version))
        await asyncio.sleep(0.2)
        # no room: the slower one (the least recently used, busy) is drained; the slow one goes idle first
        third_call = asyncio.ensure_future(runner.async_run(x, version=third.version))
        await asyncio.sleep(1.5)
        # the drained one asked for again: it must load anew, not wait forever
        again = asyncio.ensure_future(runner.async_run(x, version=slower.version))
        done, _ = await asyncio.wait([first, second, third_call, again], timeout=30)
        assert len(done) == 4, "a call for a version drained for eviction never returned"
        return [c.result().item() for c in (first, second, third_call, again)]

    try:
        assert asyncio.run(calls()) == [2, 1, 3, 2]
        stats = runner._backend.pool.stats()
        assert stats["loads"] == 4 and stats["evictions"] == 2  # the drained one, then the least recently used
        assert sorted(stats["held"]) == sorted([third.version, slower.version])
    finally:
        runner.destroy_local()


def test_placement_routes_as_one_lru_cache_over_every_replica_and_trusts_reports_after_a_grace():
    from raystore._private.runner.placement import VersionPlacement

    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, 21) ** 1.1
    trace = [f"v{i}" for i in rng.choice(20, size=3000, p=weights / weights.sum())]
    placement, loads = VersionPlacement(capacity=4), 0
    for version in trace:
        holders = placement.holders(version, ["a", "b"])
        loads += not holders
        placement.used(version, holders[0] if holders else placement.target(["a", "b"]))
    assert loads == _lru_loads(trace, 8)  # two replicas of 4 evict as one LRU cache of 8
    assert all(len(held) == 4 for held in placement.held.values())

    now = [0.0]
    placement = VersionPlacement(capacity=2, grace_s=5.0, clock=lambda: now[0])
    placement.used("x", "a")
    placement.used("x", "b")  # held twice: the one that served it last comes first
    assert placement.holders("x", ["a", "b"]) == ["b", "a"]
    placement.used("y", "a")
    placement.reported("a", [])  # a report from before both placements: they stay
    assert placement.holders("y", ["a", "b"]) == ["a"]
    now[0] = 6.0
    placement.reported("a", ["y", "z"])  # past the grace: what the replica says wins
    assert placement.holders("x", ["a", "b"]) == ["b"] and set(placement.held["a"]) == {"y", "z"}
    placement.used("w", "a")  # full: the least recently used goes (z, known from a report only)
    assert set(placement.held["a"]) == {"y", "w"}
    assert placement.target(["a", "b"]) == "b"  # b has room
    placement.forget(["a"])
    assert "b" not in placement.held


@pytest.mark.ray
def test_served_versions_each_answer_alias_moves_and_eviction_spares_requests_in_flight(ray_session):
    from ray import serve

    tags = [save_answer(k) for k in range(4)]
    slow = save_answer(9, delay_s=2.0)  # the newest: `latest`
    runner = raystore.models.runner_for(
        "answer", max_models_per_replica=2, resources={"num_cpus": 0.05}, max_latency_ms=200
    )

    @serve.deployment(ray_actor_options={"num_cpus": 0.05})
    class Caller:
        def __init__(self, runner):
            self.runner = runner

        async def __call__(self, rows, version=None):
            return (await self.runner.async_run(np.zeros((rows, 1)), version=version)).ravel().tolist()

    handle = serve.run(Caller.bind(runner.bind()), name="versions", route_prefix=None)
    stats = serve.get_deployment_handle("answer", "versions").stats
    try:
        trace = [0, 1, 0, 1, 2, 3, 2, 3, 0, 1]
        for i in trace:  # interleaved, each by its own version
            assert handle.remote(2, tags[i].version).result() == [i, i]
        assert stats.remote().result()["loads"] == _lru_loads(trace, 2)

        # 200 concurrent calls across versions, each answered by its own
        pending = [(j % 4, handle.remote(1, tags[j % 4].version)) for j in range(200)]
        assert all(response.result() == [k] for k, response in pending)

        # a slow call in flight while other versions' traffic forces evictions: it still answers
        in_flight = handle.remote(1, slow.version)
        time.sleep(0.5)
        for i in [0, 1, 2, 3, 0, 1]:
            assert handle.remote(1, tags[i].version).result() == [i]
        assert in_flight.result() == [9]
        assert stats.remote().result()["evictions"] > 0

        # an alias, moved while serving; a version saved after start, served without a restart
        raystore.models.set_alias(tags[1], "prod")
        assert handle.remote(1, "prod").result() == [1]
        raystore.models.set_alias(tags[3], "prod")
        newest = save_answer(7)
        deadline = time.time() + 20
        while time.time() < deadline and (handle.remote(1, "prod").result(), handle.remote(1).result()) != ([3], [7]):
            time.sleep(0.5)  # what an alias and `latest` mean is looked up again after a few seconds
        assert handle.remote(1, "prod").result() == [3] and handle.remote(1).result() == [7]
        assert handle.remote(1, newest.version).result() == [7]

        # Prometheus metrics: loads, evictions, versions held, load time, requests per version
        import ray

        port = ray.nodes()[0]["MetricsExportPort"]
        wanted = {
            "loads": r'ray_raystore_version_loads_total\{[^}]*application="versions"[^}]*\} (\d+)',
            "evictions": r'ray_raystore_version_evictions_total\{[^}]*application="versions"[^}]*\} (\d+)',
            "held": r'ray_raystore_versions_held\{[^}]*application="versions"[^}]*\} (\d+)',
            "load_s": r'ray_raystore_version_load_seconds_count\{[^}]*application="versions"[^}]*\} (\d+)',
            "requests": r'ray_raystore_version_requests_total\{[^}]*version="' + tags[0].version + r'"[^}]*\} (\d+)',
        }
        deadline, found = time.time() + 60, {}
        while time.time() < deadline and found.get("requests") != 55:  # 3 + 50 + 2 calls of version 0
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            found = {key: float(m.group(1)) for key, pattern in wanted.items() if (m := re.search(pattern, text))}
            time.sleep(1)
        final = stats.remote().result()
        assert found.get("loads", 0) >= 6 and found.get("evictions", 0) >= 4, found
        assert found.get("held") == 2 and found.get("load_s", 0) >= 6 and found.get("requests") == 55, found
        assert final["loads"] >= found["loads"]
    finally:
        serve.delete("versions")


@pytest.mark.ray
def test_a_hot_version_spreads_to_a_second_replica_and_a_cold_one_stays_on_one(ray_session):
    from ray import serve

    hot, cold = save_answer(6, delay_s=0.2), save_answer(8)
    # a full batch is 2 requests: a replica with 2 in flight is saturated, and the version spreads
    runner = raystore.models.runner_for(
        "answer", max_batch_size=2, max_latency_ms=5000, num_replicas=2, resources={"num_cpus": 0.05}
    )

    @serve.deployment(ray_actor_options={"num_cpus": 0.05})
    class Caller:
        def __init__(self, runner):
            self.runner = runner

        async def __call__(self, version):
            return (await self.runner.async_run(np.zeros((1, 1)), version=version)).item()

    handle = serve.run(Caller.bind(runner.bind()), name="spread", route_prefix=None)
    stats = serve.get_deployment_handle("answer", "spread").stats

    def replica_stats():
        found, deadline = {}, time.time() + 30
        while len(found) < 2 and time.time() < deadline:
            one = stats.remote().result()
            found[one["pid"]] = one
        assert len(found) == 2
        return list(found.values())

    try:
        for _ in range(5):  # one caller at a time: one replica loads it, the other is never asked
            assert handle.remote(cold.version).result() == 8
        assert sorted(s["loads"] for s in replica_stats()) == [0, 1]

        responses = [handle.remote(hot.version) for _ in range(40)]
        assert [r.result() for r in responses] == [6] * 40
        replicas = replica_stats()
        assert all(hot.version in s["held"] for s in replicas), [s["held"] for s in replicas]
        assert all(s["requests"].get(hot.version, 0) > 0 for s in replicas)
    finally:
        serve.delete("spread")


@pytest.mark.ray
def test_versioned_calls_in_flight_on_a_killed_replica_are_sent_again(ray_session):
    import os
    import signal

    from ray import serve

    slow = save_answer(5, delay_s=2.0)
    runner = raystore.models.runner_for("answer", max_latency_ms=5000, resources={"num_cpus": 0.05})

    @serve.deployment(ray_actor_options={"num_cpus": 0.05})
    class Caller:
        def __init__(self, runner):
            self.runner = runner

        async def __call__(self, version, sync=False):
            x = np.zeros((1, 1))
            if sync:  # the blocking call, as synchronous code makes it
                return (await asyncio.to_thread(self.runner.run, x, version=version)).item()
            return (await self.runner.async_run(x, version=version)).item()

    handle = serve.run(Caller.bind(runner.bind()), name="lost", route_prefix=None)
    stats = serve.get_deployment_handle("answer", "lost").stats
    try:
        assert handle.remote(slow.version).result() == 5  # loaded: the next calls wait only for the model
        replica = stats.remote().result()["pid"]
        in_flight = [handle.remote(slow.version), handle.remote(slow.version, sync=True)]
        time.sleep(1.0)
        os.kill(replica, signal.SIGKILL)  # this test's own replica, mid-call
        assert [r.result(timeout_s=120) for r in in_flight] == [5, 5]
        assert stats.remote().result()["pid"] != replica
    finally:
        serve.delete("lost")
