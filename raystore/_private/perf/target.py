"""`raystore perf MODULE:svc`: the service started on free ports for the sweep, in a process of its
own, its API's (or V2 model's) URL measured, and the service stopped after, with Ctrl-C as a user
stops it (SIGINT to the process started here, nothing else).

- `started_service`: by `raystore serve`, as users serve it;
- `tunable_service`: by `deploy.tunable`, which also applies runner settings in place (`--tune`).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from raystore._private.deploy.local import free_port
from raystore._private.deploy.tunable import ANSWER_PREFIX, RunnerSetting
from raystore._private.service.service import Service
from raystore.exceptions import InvalidArgument

READY_TIMEOUT_S = 360.0  # Ray started, and every replica loaded (the tunable host waits 300 s for them)


APPLY_TIMEOUT_S = 330.0  # the host's own wait (new replicas loading their models) and a margin


def api_route(service: Service, import_path: str, api: str | None) -> str:
    """The route of the service's API `api` (its only API when None)."""
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
    """`raystore serve IMPORT_PATH` on free ports until the block ends; yields the URL of `route`."""
    port = free_port()
    command = [str(Path(sys.executable).with_name("raystore")), "serve", *_where(import_path, working_dir, port)]
    with _running([*command, "--no-access-log"], port):
        yield f"http://127.0.0.1:{port}{route}"


class TunableService:
    """A service whose runners' settings change in place (`deploy.tunable`, in its own process)."""

    def __init__(self, server: subprocess.Popen, url: str, log: IO[bytes]):
        self.url = url
        self._server, self._log = server, log
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read_answers, args=(server.stdout,), daemon=True).start()

    def apply(self, settings: Mapping[str, RunnerSetting]) -> float:
        """Set each named runner as given and wait until the service runs so; returns the seconds."""
        request = {"runners": {name: asdict(setting) for name, setting in settings.items()}}
        self._server.stdin.write(json.dumps(request) + "\n")  # type: ignore[union-attr]
        self._server.stdin.flush()  # type: ignore[union-attr]
        try:
            answer = self._answers.get(timeout=APPLY_TIMEOUT_S)
        except queue.Empty:
            raise InvalidArgument(
                f"the service did not apply the setting within {APPLY_TIMEOUT_S:g} s; its log ends:\n{_tail(self._log)}"
            ) from None
        if answer is None:
            raise InvalidArgument(f"the service stopped while applying the setting; its log ends:\n{_tail(self._log)}")
        if "error" in answer:
            raise InvalidArgument(f"the service could not apply {request['runners']}: {answer['error']}")
        return float(answer["seconds"])

    def _read_answers(self, stream: IO[str]) -> None:
        try:
            for line in stream:
                if line.startswith(ANSWER_PREFIX):
                    try:
                        answer = json.loads(line[len(ANSWER_PREFIX) :])
                    except ValueError:
                        answer = {"error": f"an answer that is not JSON: {line.strip()[:200]}"}
                    if "ready" not in answer:
                        self._answers.put(answer)
        finally:
            self._answers.put(None)  # the process ended (or its output could not be read)


@contextlib.contextmanager
def tunable_service(import_path: str, route: str, working_dir: str) -> Iterator[TunableService]:
    """The service served by `deploy.tunable` on free ports until the block ends."""
    port = free_port()
    command = [sys.executable, "-m", "raystore._private.deploy.tunable", *_where(import_path, working_dir, port)]
    with _running(command, port, talks=True) as (server, log):
        yield TunableService(server, f"http://127.0.0.1:{port}{route}", log)


def _where(import_path: str, working_dir: str, port: int) -> list[str]:
    """The arguments both servers take: what to serve, from where, on which ports."""
    folder = str(Path(working_dir).resolve())
    return [import_path, "--working-dir", folder, "--port", str(port), "--metrics-port", str(free_port())]


@contextlib.contextmanager
def _running(command: list[str], port: int, talks: bool = False) -> Iterator[tuple[subprocess.Popen, IO[bytes]]]:
    """`command` started in a session of its own until the block ends, ready once its /readyz
    answers. Its errors go to a file, never a pipe nobody reads while it runs (a full pipe would
    block it); with `talks`, its standard input and output are pipes for `TunableService`."""
    log = tempfile.TemporaryFile()
    pipes: dict[str, Any] = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True} if talks else {}
    server = subprocess.Popen(command, start_new_session=True, **({"stdout": subprocess.DEVNULL} | pipes), stderr=log)
    try:
        _wait_ready(server, port, log)
        yield server, log
    finally:
        if talks:  # the end of its input stops it as Ctrl-C would
            with contextlib.suppress(OSError):
                server.stdin.close()  # type: ignore[union-attr]
            with contextlib.suppress(subprocess.TimeoutExpired):
                server.wait(timeout=60)
        _stop(server)
        log.close()


def _wait_ready(server: subprocess.Popen, port: int, log: Any) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        if server.poll() is not None:
            raise InvalidArgument(f"the service did not start:\n{_tail(log)}")
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


def _tail(log: IO[bytes], size: int = 2000) -> str:
    """The end of a started process's log file (its standard error). Read at an offset, never by
    seeking: the process writes at the file's shared position, which a seek here would move."""
    end = os.fstat(log.fileno()).st_size
    return os.pread(log.fileno(), size, max(0, end - size)).decode(errors="replace")
