"""A service on a two-node cluster started with `ray start` (a CPU-only head, a worker with a
logical GPU, each with its own node cache), its store on SeaweedFS: the model deployment lands on
the worker, a killed model replica costs no request, and after the worker node is lost the service
answers again once a new worker joins. `benchmarks/cluster_faults.py` measures the same faults
against a raw Serve app."""

import concurrent.futures
import itertools
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request

import pytest
import yaml
from conftest import VENV_BIN
from raycluster import free_port, start_head, start_worker

pytestmark = [pytest.mark.ray, pytest.mark.s3, pytest.mark.cluster]

SERVICE = """
import raystore
from raystore.io import NumpyNdarray

runner = raystore.models.get("tiny_script:latest").to_runner(
    name="tiny", resources={"num_cpus": 0.2, "num_gpus": 1}
)
svc = raystore.Service("faults", runners=[runner])


@svc.api(input=NumpyNdarray(dtype="float32", shape=(-1, 4)), output=NumpyNdarray())
async def predict(x):
    return await runner.async_run(x)
"""
BODY = json.dumps([[5.1, 3.5, 1.4, 0.2]]).encode()
REPLICA = "ServeReplica:faults:tiny"


class Load:
    """Requests to one URL from a few threads, one after another in each, until stopped; every
    outcome kept as (sent, ok, what, answered)."""

    def __init__(self, url: str, threads: int = 3):
        self.url, self.outcomes = url, []
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(threads)
        self._futures = [self._pool.submit(self._loop) for _ in range(threads)]

    def _loop(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            request = urllib.request.Request(self.url, data=BODY, headers={"Content-Type": "application/json"})
            try:
                with urllib.request.urlopen(request, timeout=120) as response:
                    answer = json.loads(response.read())
                    ok, what = len(answer) == 1 and abs(sum(answer[0]) - 1) < 1e-4, answer
            except urllib.error.HTTPError as exc:
                ok, what = False, f"{exc.code} {exc.read()[:200]!r}"
            except OSError as exc:
                ok, what = False, repr(exc)[:200]
            self.outcomes.append((sent, ok, what, time.monotonic()))
            time.sleep(0.1)

    def since(self, t: float) -> list[tuple[float, bool, object, float]]:
        return [o for o in self.outcomes if o[0] >= t]

    def stop(self) -> None:
        self._stop.set()
        for future in self._futures:
            future.result()
        self._pool.shutdown()


def wait_for(condition, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(0.5)


def test_a_service_rides_out_a_lost_replica_and_a_lost_worker_node(s3_bucket, tmp_path, tmp_path_factory, monkeypatch):
    import torch
    from modeldefs import TinyNet

    import raystore

    monkeypatch.setenv("RAYSTORE_HOME", s3_bucket)
    raystore.torchscript.save_model(
        "tiny_script", torch.jit.script(TinyNet().eval()), signatures={"forward": {"batchable": True}}
    )
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "faults_service.py").write_text(SERVICE)
    env = {**os.environ, "RAYSTORE_CACHE_DIR": str(tmp_path / "head-cache")}
    env.pop("RAY_ADDRESS", None)  # the nodes form their own cluster, apart from this session's Ray

    ray_dir = tmp_path_factory.mktemp("rc")  # short: Ray's socket paths must fit in 107 characters
    head, gcs, dashboard = start_head(ray_dir, env, num_cpus=2)
    nodes = [head]
    load = None
    try:
        worker_env = {**env, "RAYSTORE_CACHE_DIR": str(tmp_path / "worker-cache")}
        nodes.append(start_worker(ray_dir, worker_env, gcs, num_cpus=1, num_gpus=1))
        config_file = tmp_path / "faults.yaml"
        raystore_cli = str(VENV_BIN / "raystore")
        build = [raystore_cli, "build", "faults_service:svc", "--working-dir", str(app_dir), "-o", str(config_file)]
        out = subprocess.run(build, capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode == 0, out.stderr
        config = yaml.safe_load(config_file.read_text())
        http_port = free_port()
        config["http_options"] = {"host": "127.0.0.1", "port": http_port}
        # Both nodes share this machine, and Serve's proxies share a port (SO_REUSEPORT): with a
        # proxy on every node, the kernel would hand some connections to the worker's proxy, which
        # dies with its node. Traffic enters through the head, as a load balancer would send it.
        config["proxy_location"] = "HeadOnly"
        config_file.write_text(yaml.safe_dump(config))
        deploy = [raystore_cli, "deploy", str(config_file), "--address", dashboard, "--timeout", "300"]
        out = subprocess.run(deploy, capture_output=True, text=True, env=env, timeout=360)
        assert out.returncode == 0, out.stdout + out.stderr

        # the model replica asks for a GPU: only the worker has one
        assert len(nodes[1].actor_pids(REPLICA)) == 1 and nodes[0].actor_pids(REPLICA) == []
        load = Load(f"http://127.0.0.1:{http_port}/predict")
        wait_for(lambda: any(o[1] for o in load.outcomes), "a first answer", 60)

        # 1. the model replica killed: calls in flight are sent again and wait for its replacement
        fault = time.monotonic()
        os.kill(nodes[1].actor_pids(REPLICA)[0], signal.SIGKILL)
        wait_for(lambda: sum(o[1] for o in load.since(fault + 1)) >= 10, "answers after a replica was lost", 120)
        during = load.since(fault)
        assert [what for _, ok, what, _ in during if not ok] == []

        # 2. the worker node lost (its raylet killed); a new worker node joins 5 s later
        fault = time.monotonic()
        os.kill(nodes[1].raylet_pid(), signal.SIGKILL)
        time.sleep(5)
        worker_env = {**env, "RAYSTORE_CACHE_DIR": str(tmp_path / "worker2-cache")}
        nodes.append(start_worker(ray_dir, worker_env, gcs, num_cpus=1, num_gpus=1))
        wait_for(lambda: nodes[2].actor_pids(REPLICA), "the model replica on the new worker", 180)
        wait_for(lambda: sum(o[1] for o in load.since(time.monotonic() - 3)) >= 5, "answers again", 120)
        answers = [fault, *sorted(answered for _, ok, _, answered in load.since(fault) if ok)]
        gap = max(b - a for a, b in itertools.pairwise(answers))
        failed = [what for _, ok, what, _ in load.since(fault) if not ok]
        # Calls in flight on the lost node are sent again, but a connection the proxy held to a
        # replica on that node may fail with it: reported, not asserted.
        print(f"worker node lost: {gap:.1f} s without an answer; {len(failed)} failed: {failed}")
    finally:
        if load is not None:
            load.stop()
        for node in reversed(nodes):
            node.stop()
