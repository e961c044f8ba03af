"""Runners in this process: sklearn and pytorch models, one and several signatures, batched and not."""

import asyncio

import numpy as np
import pytest

import raystore
from raystore.exceptions import InvalidArgument, RunnerNotReady


def test_sklearn_runner_local(iris, iris_clf):
    X, _ = iris
    m = raystore.sklearn.save_model(
        "iris_clf", iris_clf, signatures={"predict": {"batchable": True}, "decision_function": {}}
    )
    runner = m.to_runner(max_batch_size=16, max_latency_ms=200)
    assert runner.name == "iris_clf" and set(runner.methods) == {"predict", "decision_function"}
    with pytest.raises(RunnerNotReady, match="call runner.init_local"):
        runner.predict.run(X[:2])
    runner.init_local()
    np.testing.assert_array_equal(runner.predict.run(X[:5]), iris_clf.predict(X[:5]))
    np.testing.assert_allclose(runner.decision_function.run(X[:5]), iris_clf.decision_function(X[:5]))
    with pytest.raises(InvalidArgument, match="several methods"):
        runner.run(X[:1])

    async def many():
        return await asyncio.gather(*[runner.predict.async_run(X[i : i + 3]) for i in range(0, 147, 3)])

    results = asyncio.run(many())
    for i, out in zip(range(0, 147, 3), results):
        np.testing.assert_array_equal(out, iris_clf.predict(X[i : i + 3]))
    stats = runner.predict.stats
    assert stats.batches < stats.requests  # calls were really batched
    assert max(stats.batch_sizes) <= 16


def test_pytorch_runner_batch_dim_pair(store_home):
    torch = pytest.importorskip("torch")

    class ColumnSum(torch.nn.Module):
        def forward(self, x):  # x: (features, rows) -> (rows,)
            return x.sum(dim=0)

    m = raystore.pytorch.save_model(
        "colsum", ColumnSum(), signatures={"__call__": {"batchable": True, "batch_dim": (1, 0)}}
    )
    runner = m.to_runner().init_local()
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    torch.testing.assert_close(runner.run(x), torch.tensor([12.0, 15.0, 18.0, 21.0]))

    async def many():
        inputs = [np.full((3, k), float(k), dtype=np.float32) for k in range(1, 9)]
        outs = await asyncio.gather(*[runner.async_run(x) for x in inputs])
        return inputs, outs

    inputs, outs = asyncio.run(many())
    for x, out in zip(inputs, outs):
        torch.testing.assert_close(out, torch.from_numpy(x.sum(axis=0)))


def test_custom_runnable_without_the_store():
    class Doubler(raystore.Runnable):
        @raystore.Runnable.method(batchable=True)
        def double(self, xs):
            return [2 * x for x in xs]

        @raystore.Runnable.method
        async def hello(self, name):
            return f"hello {name}"

    runner = raystore.Runner(Doubler, name="doubler").init_local()
    assert runner.double.run([1, 2, 3]) == [2, 4, 6]
    assert runner.hello.run("you") == "hello you"
    assert asyncio.run(runner.hello.async_run("me")) == "hello me"


def test_fast_batches_run_inline_and_slow_ones_on_a_thread():
    import threading
    import time

    class Timed(raystore.Runnable):
        def __init__(self):
            self.threads = []
            self.in_task = []

        @raystore.Runnable.method(batchable=True)
        def fast(self, xs):
            self.threads.append(threading.get_ident())
            try:
                self.in_task.append(asyncio.current_task() is not None)
            except RuntimeError:  # a worker thread has no event loop
                self.in_task.append(None)
            return xs

        @raystore.Runnable.method(batchable=True)
        def slow(self, xs):
            self.threads.append(threading.get_ident())
            time.sleep(0.005)
            return xs

    runner = raystore.Runner(Timed, name="timed").init_local()
    instance = runner.runnable_instance

    async def calls(method):
        loop_thread = threading.get_ident()
        for i in range(5):
            assert await getattr(runner, method).async_run([i]) == [i]
        return loop_thread

    loop_thread = asyncio.run(calls("fast"))
    # The first batch runs on a thread (nothing known yet); once known to be fast, on the loop.
    assert instance.threads[0] != loop_thread and set(instance.threads[1:]) == {loop_thread}
    assert instance.in_task[1:] == [False] * 4  # run by the queue's pump itself, no task per batch
    instance.threads.clear()
    loop_thread = asyncio.run(calls("slow"))
    assert loop_thread not in instance.threads  # 5 ms batches keep the loop free


def test_a_slow_unbatched_call_leaves_the_loop_free_for_health_checks():
    import threading
    import time

    class Generator(raystore.Runnable):
        def __init__(self):
            self.threads = []

        @raystore.Runnable.method
        def generate(self, seconds):
            self.threads.append(threading.get_ident())
            time.sleep(seconds)
            return seconds

        @raystore.Runnable.method
        def quick(self, x):
            self.threads.append(threading.get_ident())
            return x

    runner = raystore.Runner(Generator, name="generator").init_local()
    backend = runner._backend

    async def scenario():
        loop_thread = threading.get_ident()
        slow = asyncio.ensure_future(runner.generate.async_run(3.0))
        await asyncio.sleep(0.05)
        # Serve's check while the model computes: answered, not blocked for the call's 3 s
        await asyncio.wait_for(backend.check_health(), timeout=2.0)
        assert not slow.done()
        assert await slow == 3.0
        for i in range(4):
            assert await runner.quick.async_run(i) == i
        return loop_thread

    loop_thread = asyncio.run(scenario())
    instance = runner.runnable_instance
    assert instance.threads[0] != loop_thread  # the 3 s call ran on a worker thread
    assert instance.threads[-1] == loop_thread  # a call known to be fast runs on the loop


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"name": "Bad Name"}, "runner name 'Bad Name'"),
        ({"method_configs": {"nope": {}}}, "method_configs names ['nope']"),
        ({"method_configs": {"predict": {"batch": 1}}}, "unknown keys ['batch']"),
        ({"max_batch_size": 0}, "max_batch_size must be an integer >= 1"),
        ({"resources": {"num_gpus": 1}}, "runs on CPU only"),
        ({"num_replicas": 0}, "num_replicas must be a positive int"),
    ],
)
def test_runner_options_are_checked(iris_clf, kwargs, words):
    m = raystore.sklearn.save_model("iris_clf", iris_clf)
    with pytest.raises(InvalidArgument) as err:
        m.to_runner(**kwargs)
    assert words in str(err.value)


def test_assigned_gpu_without_cuda_falls_back_to_cpu(monkeypatch, caplog):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("CUDA is usable here")
    from raystore._private.frameworks.pytorch import runner_device

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with caplog.at_level("WARNING", logger="raystore.pytorch"):
        assert runner_device(torch).type == "cpu"
    assert "CUDA is not usable; running on CPU" in caplog.text
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert runner_device(torch).type == "cpu"


@pytest.mark.gpu
def test_pytorch_runner_on_cuda(monkeypatch):
    torch = pytest.importorskip("torch")
    from modeldefs import TinyNet

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    net = TinyNet().eval()
    m = raystore.pytorch.save_model("tiny", net, signatures={"__call__": {"batchable": True}})
    runner = m.to_runner().init_local()
    assert next(runner.runnable_instance.model.module.parameters()).device.type == "cuda"
    x = np.random.default_rng(0).random((5, 4), dtype=np.float32)
    out = runner.run(x)
    assert out.device.type == "cpu"
    torch.testing.assert_close(out, net(torch.from_numpy(x)))


def test_a_runner_replica_exempts_its_start_up_heap_from_full_collections():
    import gc

    from raystore._private.runner.served import RunnerReplica

    class Tiny(raystore.Runnable):
        @raystore.Runnable.method
        def echo(self, x):
            return x

    import os
    import sys

    saved_env = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    torch = sys.modules.get("torch")
    saved_threads = torch.get_num_threads() if torch else None
    gc.unfreeze()
    try:
        RunnerReplica(raystore.Runner(Tiny, name="tiny_heap").spec, ("echo",), num_cpus=1)
        assert gc.get_freeze_count() > 1000  # numpy, raystore and the rest it had loaded
    finally:
        gc.unfreeze()
        for key, value in saved_env.items():  # the replica sized this process's math threads
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if torch is not None:
            torch.set_num_threads(saved_threads)


class Echo(raystore.Runnable):
    def __init__(self):
        self.loads = 1

    @raystore.Runnable.method(batchable=True)
    def echo(self, xs):
        return xs

    @raystore.Runnable.method
    def plain(self, x):
        return x


def test_the_spec_is_frozen_and_checked_once():
    import dataclasses

    runner = raystore.Runner(Echo, name="echo", max_batch_size=8, method_configs={"plain": {"max_latency_ms": 5}})
    assert runner.spec.methods["echo"].batch.max_batch_size == 8 and runner.echo.max_batch_size == 8
    assert runner.plain.max_latency_ms == 5 and runner.echo.max_latency_ms == 10_000
    assert runner.spec.mode.value == "per_method" and not runner.colocate and not runner.embedded
    with pytest.raises(dataclasses.FrozenInstanceError):
        runner.spec.name = "other"
    assert runner.echo.stats is None  # not running anywhere yet
    runner.init_local()
    assert runner.plain.stats is None and runner.echo.run([1, 2]) == [1, 2]
    assert runner.echo.stats.requests == 1 and runner.echo.stats.rows == 2


def test_a_local_model_stays_in_its_process_and_a_bound_embedded_copy_loads_on_first_call():
    import cloudpickle

    runner = raystore.Runner(Echo, name="echo", embedded=True).init_local()
    assert runner.is_local and runner.runnable_instance.loads == 1
    travelled = cloudpickle.loads(cloudpickle.dumps(runner))
    with pytest.raises(RunnerNotReady, match="is not running"):
        travelled.plain.run(1)  # not in a Serve replica: nothing loads behind the caller's back

    bound = runner.bind()  # embedded: no Serve involved
    assert bound.runnable_instance is None and not bound.is_local
    assert bound.plain.run(3) == 3 and bound.is_local and bound.runnable_instance is not runner.runnable_instance

    module_runner = raystore.Runner(Echo, name="echo", embedded=True)
    module_runner.adopt(bound)  # what a service's ingress does for the runners its module holds
    assert module_runner.runnable_instance is bound.runnable_instance
    assert module_runner.echo.run([4]) == [4]
    with pytest.raises(InvalidArgument, match="cannot adopt"):
        raystore.Runner(Echo, name="other").adopt(bound)


def test_a_bound_runner_called_outside_serve_says_so():
    bound = raystore.Runner(Echo, name="echo", resources={"num_cpus": 0.1}).bind()
    with pytest.raises(RunnerNotReady, match="bound but not deployed here"):
        bound.plain.run(1)


def test_a_local_runner_takes_new_batch_settings_in_place():
    class Summer(raystore.Runnable):
        @raystore.Runnable.method(batchable=True)
        def total(self, xs: list) -> list:
            return [sum(xs)] * len(xs)

    runner = raystore.Runner(Summer, name="summer", max_batch_size=4, max_latency_ms=100)
    with pytest.raises(InvalidArgument, match="does not run in this process"):
        runner.reconfigure("total", {"max_batch_size": 2})
    runner.init_local()
    try:
        assert runner.total.run([1, 2]) == [3, 3]
        runner.reconfigure("total", {"max_batch_size": 2, "max_latency_ms": 7.5})
        view = asyncio.run(runner.total.replica_stats())
        assert view["settings"] == {"max_batch_size": 2, "max_latency_ms": 7.5}
        assert view["requests"] == 1  # the same queue, its history kept
        with pytest.raises(InvalidArgument, match=r"unknown batch settings \['max_batch'\]"):
            runner.reconfigure("total", {"max_batch": 8})
        with pytest.raises(InvalidArgument, match="has no method 'nope'"):
            runner.reconfigure("nope", {"max_batch_size": 8})
        with pytest.raises(InvalidArgument, match="max_batch_size"):
            runner.reconfigure("total", {"max_batch_size": 0})
        assert asyncio.run(runner.total.replica_stats())["settings"]["max_batch_size"] == 2  # refused: unchanged
    finally:
        runner.destroy_local()
