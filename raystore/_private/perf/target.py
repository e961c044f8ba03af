"""`raystore perf MODULE:svc --api NAME`: the service started on a free port for the sweep (by
`raystore serve`, in a process of its own), its API's URL measured, and the service stopped
after, with Ctrl-C as a user stops it (SIGINT to the process started here, nothing else)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from raystore._private.service.service import load_service
from raystore.exceptions import InvalidArgument

READY_TIMEOUT_S = 240.0


def api_route(import_path: str, api: str | None, working_dir: str) -> str:
    """The route of the service's API `api` (its only API when None)."""
    folder = str(Path(working_dir).resolve())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    service = load_service(import_path)
    if api is None:
        if len(service.apis) != 1:
            raise InvalidArgument(
                f"{import_path} has APIs {sorted(service.apis)}: say which to measure with --api NAME"
            )
        api = next(iter(service.apis))
    if api not in service.apis:
        raise InvalidArgument(f"{import_path} has no API {api!r}; it has {sorted(service.apis)}")
    return service.apis[api].route


@contextlib.contextmanager
def started_service(import_path: str, route: str, working_dir: str) -> Iterator[str]:
    """`raystore serve IMPORT_PATH` on free ports until the block ends; yields the API's URL."""
    port, metrics_port = _free_port(), _free_port()
    command = [
        str(Path(sys.executable).with_name("raystore")),
        "serve",
        import_path,
        "--working-dir",
        str(Path(working_dir).resolve()),
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--no-access-log",
    ]
    # Its output goes to a file, never a pipe nobody reads while it runs (a full pipe would block it).
    log = tempfile.TemporaryFile()
    server = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=log)
    try:
        _wait_ready(server, port, log)
        yield f"http://127.0.0.1:{port}{route}"
    finally:
        _stop(server)
        log.close()


def _wait_ready(server: subprocess.Popen, port: int, log: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if server.poll() is not None:
            log.seek(0)
            errors = log.read().decode(errors="replace")[-2000:]
            raise InvalidArgument(f"the service did not start:\n{errors}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise InvalidArgument(f"the service was not ready after {READY_TIMEOUT_S:g} s") from None
            time.sleep(0.5)


def _stop(server: subprocess.Popen) -> None:
    for wait_s in (60, 15):  # Ctrl-C stops it gracefully; a second one at once
        if server.poll() is not None:
            return
        server.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=wait_s)
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)  # its own session: only what it started
        server.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
