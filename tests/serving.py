"""`raystore serve` run as a user runs it, for the tests that serve: a process of its own, in a
session of its own, stopped with Ctrl-C so that it cleans up after itself."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from raystore._private.deploy.local import free_port

__all__ = ["free_port", "raystore_serve"]


@contextlib.contextmanager
def raystore_serve(
    env: dict, target: str, working_dir: Path, *options: str, metrics_port: int | None = None
) -> Iterator[tuple[subprocess.Popen, int]]:
    """`raystore serve TARGET` until the block ends; yields (process, port) once /readyz answers.
    A server still running at the end gets a Ctrl-C (a second one if it lingers: in-flight
    requests are not waited for), and SIGKILL only as the last resort.

    A free port can be taken by another process between being picked and being bound (Ray's own
    workers bind ports all the time): a start that fails for that reason is retried on new ports.
    """
    for _ in range(3):
        server, port = _start(env, target, working_dir, options, metrics_port)
        try:
            if _wait_ready(server, port, target):
                break
        except BaseException:
            _stop(server)
            raise
    else:
        raise AssertionError(f"{target}: the ports were taken three times in a row")
    try:
        yield server, port
    finally:
        _stop(server)


def _start(env, target, working_dir, options, metrics_port) -> tuple[subprocess.Popen, int]:
    port = free_port()
    metrics_port = metrics_port or free_port()
    while metrics_port == port:
        metrics_port = free_port()
    command = [
        str(Path(sys.executable).with_name("raystore")),
        "serve",
        target,
        "--working-dir",
        str(working_dir),
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        *options,
    ]
    server = subprocess.Popen(
        command, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return server, port


def _wait_ready(server: subprocess.Popen, port: int, target: str) -> bool:
    """True once /readyz answers; False when the server died because a port was taken."""
    deadline = time.monotonic() + 180
    while True:
        if server.poll() is not None:
            errors = server.stderr.read().decode()
            # a random port can also be one Ray claims for itself (52365, its dashboard agent's)
            taken = ("Failed to bind", "Address already in use", "that is used by other components")
            if any(words in errors for words in taken):
                return False
            raise AssertionError(errors[-3000:])
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
            return True
        except OSError:
            assert time.monotonic() < deadline, f"{target} never became ready"
            time.sleep(0.5)


def _stop(server: subprocess.Popen) -> None:
    for wait_s in (45, 15):
        if server.poll() is not None:
            break
        server.send_signal(signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=wait_s)
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
