"""Benchmark: how a service on a two-node Ray cluster rides out faults, against a raw Ray Serve app
under the same faults.

    .venv/bin/python benchmarks/cluster_faults.py [--rate 20] [--replicas 2]

Everything runs on this machine: SeaweedFS as the store, a head node started with `ray start`
(CPU only) and a worker node with logical GPUs, each with its own node cache. A PyTorch model saved
to the store on SeaweedFS is served by a raystore service (`raystore build` + `raystore deploy`,
the runner asking for one GPU, so it lands on the worker) and, as the baseline, by a hand-written
Serve app of the same shape (an ingress deployment calling a model deployment with one GPU through
a handle). A client sends `--rate` requests per second to both over HTTP while:

1. one model replica is killed (SIGKILL);
2. one model replica is hung (SIGSTOP): only Serve's health checks can find it;
3. the worker node's raylet is killed, and a new worker node joins 5 s later (as an autoscaler
   would bring one back: the model needs a GPU, and only workers have them).

For each fault and app: requests that failed, the longest time without a successful answer, and
the time from the fault until every request succeeds again. The benchmark starts and stops its own
SeaweedFS and Ray nodes (by their process groups).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from raycluster import free_port, start_head, start_worker  # noqa: E402
from s3server import start_seaweedfs  # noqa: E402

KEY, SECRET = "raystore-bench", "raystore-bench-secret"
BODY = json.dumps([[5.1, 3.5, 1.4, 0.2]]).encode()

SERVICE = """
import raystore
from raystore.io import NumpyNdarray

runner = raystore.models.get("tiny_torch:latest").to_runner(name="tiny", num_replicas={replicas})
svc = raystore.Service("faults", runners=[runner])


@svc.api(input=NumpyNdarray(dtype="float32", shape=(-1, 4)), output=NumpyNdarray())
async def predict(x):
    return await runner.async_run(x)
"""

RAW_APP = """
import numpy as np
import torch
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

import raystore


@serve.deployment(ray_actor_options={{"num_cpus": 0.1, "num_gpus": 1}}, num_replicas={replicas})
class RawModel:
    def __init__(self):
        self.model = raystore.pytorch.load_model("tiny_torch:latest")

    def __call__(self, x):
        with torch.inference_mode():
            return self.model(torch.from_numpy(x)).numpy()


@serve.deployment(ray_actor_options={{"num_cpus": 0.1}})
class RawIngress:
    def __init__(self, model):
        self.model = model

    async def __call__(self, request: Request):
        x = np.asarray(await request.json(), dtype=np.float32)
        return JSONResponse((await self.model.remote(x)).tolist())


app = RawIngress.bind(RawModel.bind())
"""


class Load:
    """Requests at a fixed rate to one URL, each recorded as (sent, answered, ok)."""

    def __init__(self, url: str, rate: float):
        self.url, self.rate = url, rate
        self.records: list[tuple[float, float, bool]] = []
        self.failures: list[tuple[float, str]] = []  # (sent, what went wrong)
        self._stop = threading.Event()
        self._pool = concurrent.futures.ThreadPoolExecutor(64)
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)

    def _one(self, sent: float) -> None:
        request = urllib.request.Request(self.url, data=BODY, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                ok = response.status == 200 and len(json.loads(response.read())) == 1
        except urllib.error.HTTPError as exc:
            ok = False
            self.failures.append((sent, f"{exc.code} {exc.read()[:160].decode(errors='replace')}"))
        except (OSError, ValueError) as exc:
            ok = False
            self.failures.append((sent, f"{type(exc).__name__}: {exc}"[:200]))
        self.records.append((sent, time.monotonic(), ok))

    def _run(self) -> None:
        start = time.monotonic()
        sent = 0
        while not self._stop.is_set():
            due = int((time.monotonic() - start) * self.rate) + 1 - sent
            for _ in range(due):
                self._pool.submit(self._one, time.monotonic())
                sent += 1
            time.sleep(0.5 / self.rate)

    def summary(self, fault_at: float, until: float) -> dict:
        """Over the requests sent from the fault on: how many failed, the longest time without a
        successful answer, and when the service was back: the time from the fault after which
        every request sent succeeded within a second."""
        window = sorted(r for r in self.records if fault_at <= r[0] < until)
        answers = sorted(r[1] for r in window if r[2])
        gaps = [b - a for a, b in zip([fault_at, *answers], answers)]
        bad = [r[0] for r in window if not r[2] or r[1] - r[0] > 1.0]
        back = min((r[0] for r in window if r[0] > max(bad, default=fault_at)), default=float("nan"))
        return {
            "reasons": [f"{t - fault_at:+.1f} s: {why}" for t, why in sorted(self.failures) if fault_at <= t < until],
            "sent": len(window),
            "failed": sum(1 for r in window if not r[2]),
            "longest_gap_s": max(gaps, default=float("nan")),
            "recovered_after_s": back - fault_at if bad else 0.0,
        }


def replica_pids(dashboard: str, deployment: str) -> list[tuple[int, str]]:
    """(pid, node id) of the live replicas of `deployment`, from Ray's state API."""
    from ray.util.state import list_actors

    actors = list_actors(address=dashboard, filters=[("state", "=", "ALIVE")], limit=1000, detail=True)
    return [(a.pid, a.node_id) for a in actors if f"#{deployment}#" in (a.name or "")]


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie waiting for its parent counts as ended)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def run(cmd: list[str], env: dict) -> str:
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def wait_for(condition, what: str, timeout: float = 300) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.25)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="requests per second to each app")
    parser.add_argument("--replicas", type=int, default=2, help="model replicas (one logical GPU each)")
    parser.add_argument("--settle", type=float, default=20.0, help="seconds measured after each fault")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="raystore-faults-"))
    bin_dir = Path(sys.executable).parent
    server = start_seaweedfs(bin_dir / "weed", work / "seaweedfs", KEY, SECRET)
    nodes = []
    try:
        import s3fs
        import torch

        s3fs.S3FileSystem(key=KEY, secret=SECRET, client_kwargs={"endpoint_url": server.endpoint}).mkdir("faults")
        store = "s3://faults/store"
        env = dict(os.environ)
        env.update(
            AWS_ACCESS_KEY_ID=KEY,
            AWS_SECRET_ACCESS_KEY=SECRET,
            RAYSTORE_S3_ENDPOINT_URL=server.endpoint,
            RAYSTORE_HOME=store,
            RAYSTORE_CONFIG=str(work / "no-config.yaml"),
            RAY_AUTH_MODE="token",  # the state API sends ~/.ray/auth_token only when told to
        )
        os.environ.update(env)
        import raystore

        class TinyNet(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.linear = torch.nn.Linear(4, 3)

            def forward(self, x):
                return torch.softmax(self.linear(x), dim=-1)

        raystore.pytorch.save_model("tiny_torch", TinyNet().eval(), signatures={"__call__": {"batchable": True}})

        app_dir = work / "apps"
        app_dir.mkdir()
        (app_dir / "faults_service.py").write_text(SERVICE.format(replicas=args.replicas))
        (app_dir / "raw_app.py").write_text(RAW_APP.format(replicas=args.replicas))

        head, gcs, dashboard = start_head(work, {**env, "RAYSTORE_CACHE_DIR": str(work / "head-cache")}, num_cpus=2)
        nodes.append(head)
        worker_env = {**env, "RAYSTORE_CACHE_DIR": str(work / "worker-cache")}
        # logical CPUs: a runner replica asks for one by default, beside its GPU
        # Logical GPUs for both apps' model replicas; a runner replica also asks for one CPU by default.
        gpus, cpus = 2 * args.replicas, args.replicas + 1
        nodes.append(start_worker(work, worker_env, gcs, num_cpus=cpus, num_gpus=gpus))
        from ray.util.state import list_nodes

        def alive_nodes():
            return [n for n in list_nodes(address=dashboard) if n.state == "ALIVE"]

        # "auto" GPUs are settled when the app is built, against the cluster as it is then
        wait_for(lambda: len(alive_nodes()) == 2, "the worker node to join")

        http_port = free_port()
        config_file = work / "faults.yaml"
        run(
            [
                str(bin_dir / "raystore"),
                "build",
                "faults_service:svc",
                "--working-dir",
                str(app_dir),
                "-o",
                str(config_file),
                "--route-prefix",
                "/faults",
            ],
            env,
        )
        import yaml

        config = yaml.safe_load(config_file.read_text())
        config["http_options"] = {"host": "127.0.0.1", "port": http_port}
        # Both nodes share this machine, and Serve's proxies share a port (SO_REUSEPORT): with a
        # proxy on every node, the kernel would hand some connections to the worker's proxy, which
        # dies with its node. Traffic enters through the head, as a load balancer would send it.
        config["proxy_location"] = "HeadOnly"
        raw = {
            "name": "raw",
            "route_prefix": "/raw",
            "import_path": "raw_app:app",
            "runtime_env": {
                "env_vars": {**config["applications"][0]["runtime_env"]["env_vars"], "PYTHONPATH": str(app_dir)}
            },
        }
        config["applications"].append(raw)
        config_file.write_text(yaml.safe_dump(config))
        deploy_s = time.monotonic()
        try:
            run([str(bin_dir / "raystore"), "deploy", str(config_file), "--address", dashboard], env)
        except RuntimeError:
            from raystore._private.deploy.cluster import serve_status

            for app_name, app in (serve_status(dashboard).get("applications") or {}).items():
                for dep_name, dep in (app.get("deployments") or {}).items():
                    print(app_name, dep_name, dep.get("status"), dep.get("message"), file=sys.stderr)
            raise
        deploy_s = time.monotonic() - deploy_s
        placements = {}
        for name, deployment in (("raystore", "tiny-call"), ("raw Serve", "RawModel")):
            replicas = replica_pids(dashboard, deployment)
            placements[name] = replicas
        head_ids = {n.node_id for n in alive_nodes() if n.is_head_node}
        worker_node = {n.node_id for n in alive_nodes() if not n.is_head_node}
        ingress_on = {
            name: ["worker" if node in worker_node else "head" for _, node in replica_pids(dashboard, deployment)]
            for name, deployment in (("raystore", "faults-ingress"), ("raw Serve", "RawIngress"))
        }
        for name, replicas in placements.items():
            on = {node for _, node in replicas}
            assert on <= worker_node and not on & head_ids, f"{name}'s model replicas are on {on}, not the worker"

        urls = {
            "raystore": f"http://127.0.0.1:{http_port}/faults/predict",
            "raw Serve": f"http://127.0.0.1:{http_port}/raw",
        }
        for name, url in urls.items():  # both answer before any fault
            request = urllib.request.Request(url, data=BODY, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=60) as response:
                assert len(json.loads(response.read())) == 1, name
        loads = {name: Load(url, args.rate).start() for name, url in urls.items()}
        time.sleep(5)
        results = {}

        # 1. one model replica of each app killed
        fault = time.monotonic()
        for replicas in placements.values():
            os.kill(replicas[0][0], signal.SIGKILL)
        time.sleep(args.settle)
        for name, load in loads.items():
            results[("replica killed", name)] = load.summary(fault, fault + args.settle)

        # 2. one model replica of each app hung (SIGSTOP): only a health check can tell
        fault = time.monotonic()
        stopped = [replica_pids(dashboard, deployment)[0][0] for deployment in ("tiny-call", "RawModel")]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        settle = max(args.settle, 60.0)
        replaced_after = {}  # app -> seconds until Serve ended the hung replica
        while time.monotonic() < fault + settle:
            for name, pid in zip(("raystore", "raw Serve"), stopped):
                if name not in replaced_after and not _alive(pid):
                    replaced_after[name] = time.monotonic() - fault
            time.sleep(0.25)
        for name, load in loads.items():
            results[("replica hung", name)] = load.summary(fault, fault + settle)
            results[("replica hung", name)]["replaced_after_s"] = replaced_after.get(name)
        for pid in stopped:  # what Serve has not replaced yet is ended here, before the next fault
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(5)

        # 3. the worker's raylet killed; a new worker joins 5 s later
        fault = time.monotonic()
        os.kill(nodes[1].raylet_pid(), signal.SIGKILL)
        time.sleep(5)
        nodes.append(
            start_worker(
                work,
                {**env, "RAYSTORE_CACHE_DIR": str(work / "worker2-cache")},
                gcs,
                num_cpus=cpus,
                num_gpus=gpus,
            )
        )
        time.sleep(settle)
        for name, load in loads.items():
            load.stop()
            results[("worker node lost", name)] = load.summary(fault, fault + settle)
    finally:
        for node in reversed(nodes):
            node.stop()
        server.stop()

    print(f"\nTwo-node cluster on one machine; {args.replicas} model replicas (one logical GPU each) on the worker;")
    print(f"{args.rate:g} requests/s to each app over HTTP; deploying both took {deploy_s:.0f} s.\n")
    print(f"ingress replicas on: {ingress_on}\n")
    header = f"{'fault':<17} {'app':<10} {'sent':>5} {'failed':>6} {'longest gap s':>13} {'recovered after s':>17}"
    print(header)
    print("-" * len(header))
    for (fault_name, app), r in results.items():
        print(
            f"{fault_name:<17} {app:<10} {r['sent']:>5} {r['failed']:>6} {r['longest_gap_s']:>13.1f} "
            f"{'not in window' if r['recovered_after_s'] != r['recovered_after_s'] else round(r['recovered_after_s'], 1):>17}"
        )
    for (fault_name, app), r in results.items():
        if "replaced_after_s" in r:
            after = r["replaced_after_s"]
            replaced = f"after {after:.1f} s" if after is not None else f"not within {settle:.0f} s"
            print(f"  {fault_name}, {app}: Serve replaced the hung replica {replaced}")
    for (fault_name, app), r in results.items():
        for reason in r["reasons"]:
            print(f"  {fault_name}, {app}: request sent {reason}")
    print(
        "\n'longest gap': the longest time without a successful answer; 'recovered after': from the fault"
        "\nuntil every request sent succeeds within a second."
    )


if __name__ == "__main__":
    main()
