"""Runners served by a real local Ray (two logical GPUs, or the real ones): one deployment per signature with its
resources, fractional GPUs packed onto one device, and calls through handles from another deployment."""

import asyncio

import numpy as np
import pytest
from ray import serve
from runnables import Caller, Placement, Sickly, Slow

import raystore
from raystore.exceptions import InvalidArgument

pytestmark = pytest.mark.ray


def _deployments(app_name):
    return set(serve.status().applications[app_name].deployments)


def test_per_signature_deployments_resources_and_gpu_packing(ray_session):
    runner = raystore.Runner(
        Placement,
        name="placement",
        resources={"num_cpus": 0.1, "num_gpus": 0.5},
        num_replicas=2,
        method_configs={"transpose_plus": {"resources": {"num_cpus": 0.05, "num_gpus": 0}, "max_batch_size": 8}},
    )
    handle = serve.run(Caller.bind(runner.bind()), name="placement", route_prefix=None)
    try:
        assert _deployments("placement") == {"Caller", "placement-where", "placement-transpose_plus"}
        seen = {}
        for _ in range(40):
            info = handle.remote("where").result()
            seen[info["replica"]] = info
            if len(seen) == 2:
                break
        assert len(seen) == 2, "both replicas should answer"
        for info in seen.values():
            assert info["deployment"] == "placement-where"
            assert info["resources"]["GPU"] == pytest.approx(0.5)
            assert info["resources"]["CPU"] == pytest.approx(0.1)
            assert info["gpu_ids"] and info["cuda_visible_devices"] == info["gpu_ids"][0]
            assert info["omp_threads"] == "1"
        assert {i["cuda_visible_devices"] for i in seen.values()} == {"0"}  # packed onto one GPU
        # the other signature asked for no GPU
        x = np.arange(6).reshape(2, 3)
        np.testing.assert_array_equal(handle.remote("transpose_plus", x).result(), x.T + 1000)
        np.testing.assert_array_equal(handle.chained.remote(x).result(), x.T + 1000)
    finally:
        serve.delete("placement")


def test_200_concurrent_calls_get_their_own_rows(ray_session):
    runner = raystore.Runner(
        Placement, name="rows", resources={"num_cpus": 0.05, "num_gpus": 0}, max_batch_size=32, max_latency_ms=2000
    )
    handle = serve.run(Caller.bind(runner.bind()), name="rows", route_prefix=None)
    try:

        async def call_all():
            requests = []
            for i in range(200):
                k = 1 + i % 3
                x = np.full((2, k), i)  # batch_dim (1, 0): rows are columns in, rows out
                requests.append((i, k, handle.remote("transpose_plus", x)))
            return [(i, k, await response) for i, k, response in requests]

        for i, k, out in asyncio.run(call_all()):
            assert out.shape == (k, 2)
            assert (out == i + 1000).all()
    finally:
        serve.delete("rows")


def test_sklearn_runner_served_and_embedded(ray_session, iris, iris_clf, store_home):
    X, _ = iris
    m = raystore.sklearn.save_model("iris_clf", iris_clf, signatures={"predict": {"batchable": True}})
    served = m.to_runner(resources={"num_cpus": 0.05})
    handle = serve.run(Caller.bind(served.bind()), name="served", route_prefix=None)
    try:
        assert _deployments("served") == {"Caller", "iris_clf-predict"}
        np.testing.assert_array_equal(handle.remote("predict", X[:10]).result(), iris_clf.predict(X[:10]))
    finally:
        serve.delete("served")
    embedded = m.to_runner(name="iris_embedded", embedded=True)
    handle = serve.run(Caller.bind(embedded.bind()), name="embedded", route_prefix=None)
    try:
        assert _deployments("embedded") == {"Caller"}  # no extra hop
        np.testing.assert_array_equal(handle.remote("predict", X[-7:]).result(), iris_clf.predict(X[-7:]))
    finally:
        serve.delete("embedded")


def test_colocated_runner_is_one_deployment(ray_session):
    runner = raystore.Runner(Placement, name="together", colocate=True, resources={"num_cpus": 0.05, "num_gpus": 0})
    handle = serve.run(Caller.bind(runner.bind()), name="together", route_prefix=None)
    try:
        assert _deployments("together") == {"Caller", "together"}
        assert handle.remote("where").result()["deployment"] == "together"
        np.testing.assert_array_equal(
            handle.remote("transpose_plus", np.ones((1, 2))).result(), np.full((2, 1), 1001.0)
        )
    finally:
        serve.delete("together")


def test_impossible_gpu_request_fails_at_bind_not_hang(ray_session):
    runner = raystore.Runner(Placement, name="greedy", resources={"num_gpus": 4})
    with pytest.raises(InvalidArgument, match=f"ask for 4 GPU.*cluster has {ray_session.gpus:g}"):
        runner.bind()


def test_pytorch_runner_on_a_logical_gpu_falls_back_to_cpu(ray_session):
    torch = pytest.importorskip("torch")
    from modeldefs import TinyNet

    net = TinyNet().eval()
    m = raystore.pytorch.save_model("tiny", net, signatures={"__call__": {"batchable": True, "batch_dim": 0}})
    runner = m.to_runner(resources={"num_cpus": 0.05, "num_gpus": 0.5})  # Ray assigns GPU 0; CUDA is absent
    handle = serve.run(Caller.bind(runner.bind()), name="torch_gpu", route_prefix=None)
    try:
        assert _deployments("torch_gpu") == {"Caller", "tiny-call"}
        x = np.random.default_rng(1).random((6, 4), dtype=np.float32)
        out = handle.remote("__call__", x).result()
        torch.testing.assert_close(out, net(torch.from_numpy(x)))
    finally:
        serve.delete("torch_gpu")


@pytest.mark.gpu
def test_pytorch_runner_served_on_a_real_gpu(ray_session):
    torch = pytest.importorskip("torch")
    from modeldefs import TinyNet

    net = TinyNet().eval()
    m = raystore.pytorch.save_model("tiny_cuda", net, signatures={"__call__": {}, "on_cuda": {}})
    # one replica for both signatures: the probe must run where the model does
    runner = m.to_runner(resources={"num_cpus": 0.05, "num_gpus": 1}, colocate=True)
    handle = serve.run(Caller.bind(runner.bind()), name="torch_cuda", route_prefix=None)
    try:
        x = torch.ones(3, 4)
        torch.testing.assert_close(handle.remote("__call__", x).result(), net(x))
        # the replica moved the input to its GPU, not to a CPU fallback
        assert handle.remote("on_cuda", x).result().tolist() == [1.0, 1.0, 1.0]
    finally:
        serve.delete("torch_cuda")


@pytest.mark.s3
def test_replica_loads_from_a_store_on_s3_through_the_node_cache(
    ray_session, s3_bucket, monkeypatch, iris, iris_clf, tmp_path
):
    X, _ = iris
    monkeypatch.setenv("RAYSTORE_HOME", f"{s3_bucket}/store")
    m = raystore.sklearn.save_model("iris_s3", iris_clf, signatures={"predict": {"batchable": True}})
    assert m.path.startswith("s3://")
    runner = m.to_runner(resources={"num_cpus": 0.05})
    handle = serve.run(Caller.bind(runner.bind()), name="from_s3", route_prefix=None)
    try:
        np.testing.assert_array_equal(handle.remote("predict", X[:9]).result(), iris_clf.predict(X[:9]))
    finally:
        serve.delete("from_s3")


def test_calls_on_a_replica_killed_under_load_are_answered_by_another(ray_session):
    import ray

    runner = raystore.Runner(Slow, name="sturdy", resources={"num_cpus": 0.05}, num_replicas=2)
    handle = serve.run(Caller.bind(runner.bind()), name="sturdy", route_prefix=None)
    try:
        replicas = [
            a
            for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith("SERVE_REPLICA::sturdy#sturdy-echo#")
        ]
        assert len(replicas) == 2
        results, failures = [], []

        async def caller(first: int) -> None:
            for x in range(first, first + 40):
                try:
                    results.append((x, await handle.remote("echo", x)))
                except Exception as exc:  # counted: the test says which
                    failures.append(repr(exc)[:200])

        async def load_and_kill() -> None:
            callers = [asyncio.create_task(caller(1000 * i)) for i in range(8)]
            await asyncio.sleep(0.7)  # calls in flight on both replicas
            victim = replicas[0]
            ray.kill(ray.get_actor(victim["name"], namespace=victim["namespace"]), no_restart=True)
            await asyncio.gather(*callers)

        asyncio.run(load_and_kill())
        assert failures == []
        assert sorted(x for x, _ in results) == sorted(x for i in range(8) for x in range(1000 * i, 1000 * i + 40))
        assert all(answer[0] == x for x, answer in results)
    finally:
        serve.delete("sturdy")


def test_a_replica_whose_runnable_reports_ill_is_replaced(ray_session, tmp_path):
    import time

    marker = tmp_path / "ill"
    runner = raystore.Runner(
        Sickly, name="sickly", resources={"num_cpus": 0.05}, runnable_init_params={"marker": str(marker)}
    )
    handle = serve.run(Caller.bind(runner.bind()), name="sickly", route_prefix=None)
    try:
        status = serve.status().applications["sickly"].deployments["sickly-pid"]
        assert status.status == "HEALTHY"
        first = handle.remote("pid").result()
        marker.write_text(str(first))  # its check_health raises from now on
        deadline = time.monotonic() + 60
        answers = set()
        while time.monotonic() < deadline:
            answers.add(handle.remote("pid").result(timeout_s=30))
            if answers - {first}:
                break
            time.sleep(0.5)
        assert answers - {first}, "the ill replica was still serving after 60 s"
    finally:
        serve.delete("sickly")


def test_deployments_check_health_more_often_than_serve_by_default():
    from raystore._private.runner.served import deployment_options

    runner = raystore.Runner(Slow, name="checked")
    options = deployment_options(runner.spec, ("echo",), None)
    # three missed checks in a row: about 20 s for a hung replica instead of Serve's 90 s and more
    assert options["health_check_period_s"] == 3.0 and options["health_check_timeout_s"] == 5.0
