"""How `raystore serve` stops: requests in flight finish, new ones are refused, a second Ctrl-C
stops at once, and only the processes it started are ended. Each test runs `raystore serve` as a
user would, with a local Ray of its own."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from serving import raystore_serve

pytestmark = pytest.mark.ray

TESTS = Path(__file__).resolve().parent


def _accepts_connections(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _serving(env, *options: str):
    """`raystore serve slow_service:svc` until the block ends; yields (process, port)."""
    return raystore_serve(env, "slow_service:svc", TESTS, *options)


def _listeners(session: int) -> list[tuple[str, int, str]]:
    """(address, port, command) of every listening TCP socket of the processes in `session`."""
    sockets = {}
    for path, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(path).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":  # LISTEN
                continue
            address, port = fields[1].split(":")
            raw = bytes.fromhex(address)
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # /proc prints host-order words
            sockets[fields[9]] = (socket.inet_ntop(family, raw), int(port, 16))
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3]) != session:
                continue
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            for fd in os.listdir(f"/proc/{pid}/fd"):
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in sockets:
                    found.append((*sockets[link[8:-1]], command))
        except OSError:  # a process that ended meanwhile
            continue
    return found


def _wait_in_background(port: int, seconds: float) -> dict:
    """POST /wait on a thread; the dict gets `status` and `body`, or `error`, and `at` when done."""
    outcome: dict = {}

    def call() -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/wait",
            data=json.dumps({"seconds": seconds}).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                outcome.update(status=response.status, body=json.loads(response.read()))
        except (OSError, urllib.error.HTTPError) as exc:
            outcome["error"] = repr(exc)
        outcome["at"] = time.monotonic()

    outcome["thread"] = threading.Thread(target=call, daemon=True)
    outcome["thread"].start()
    return outcome


def test_sigterm_finishes_the_request_in_flight_refuses_new_ones_and_spares_other_processes(subprocess_env):
    # Another user's process whose command line mentions both ray and haproxy.
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "ray", "haproxy"])
    try:
        with _serving(subprocess_env) as (server, port):
            # --host 127.0.0.1 (the default): all that listens is on loopback, but for what Ray
            # 2.60 binds on every interface whatever it is told (README, "Stopping is graceful").
            listeners = _listeners(server.pid)
            assert any(port == p for _, p, _ in listeners)  # the scan sees the server's own port
            wide = [(a, p, c) for a, p, c in listeners if a not in ("127.0.0.1", "::1", "::ffff:127.0.0.1")]
            haproxy_side_ports = [w for w in wide if "haproxy" in w[2].split()[0]]
            replica_grpc = [w for w in wide if w[0] == "::" and "ServeReplica" in w[2]]
            assert len(haproxy_side_ports) <= 2 and sorted(wide) == sorted(haproxy_side_ports + replica_grpc), wide
            in_flight = _wait_in_background(port, 4)
            time.sleep(1)  # the request is inside the replica now
            server.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + 10
            while _accepts_connections(port):  # it stops listening at once, long before the answer
                assert time.monotonic() < deadline, "still accepting connections after SIGTERM"
                time.sleep(0.1)
            assert "at" not in in_flight  # refused new connections while the old request still runs
            in_flight["thread"].join(60)
            assert in_flight.get("status") == 200 and in_flight["body"] == {"waited": 4}, in_flight
            assert server.wait(timeout=60) == 0
            # Within a few seconds of the last answer, not after a fixed drain (it took 38 s before).
            assert time.monotonic() - in_flight["at"] < 20
            stderr = server.stderr.read().decode()
            assert "Stopping: no new requests" in stderr and "Stopped." in stderr
        assert decoy.poll() is None, "raystore serve ended a process it did not start"
        assert not _accepts_connections(port)  # its haproxy is gone too
    finally:
        decoy.kill()
        decoy.wait()


def test_a_second_ctrl_c_stops_at_once(subprocess_env):
    with _serving(subprocess_env, "--graceful-timeout", "60") as (server, port):
        in_flight = _wait_in_background(port, 60)
        time.sleep(1)
        server.send_signal(signal.SIGINT)
        time.sleep(1)
        interrupted = time.monotonic()
        server.send_signal(signal.SIGINT)
        server.wait(timeout=45)
        assert time.monotonic() - interrupted < 30  # it did not wait out the 60 s request
        in_flight["thread"].join(30)
        assert "error" in in_flight or in_flight.get("status", 200) >= 500, in_flight
        assert not _accepts_connections(port)


def _post(port: int, route: str, body, headers: dict | None = None) -> tuple[int, object, dict]:
    """(status, the response headers (case-insensitive), the JSON body)."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{route}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers, json.loads(err.read())


def _console_after(server: subprocess.Popen, seconds: float = 1.0) -> str:
    time.sleep(seconds)  # log lines are datagrams: give the last ones a moment
    server.send_signal(signal.SIGINT)
    server.wait(timeout=60)
    return server.stderr.read().decode()


def test_the_console_logs_each_request_with_its_id_and_the_traceback_of_a_failure(subprocess_env):
    with _serving(subprocess_env) as (server, port):
        status, headers, body = _post(port, "/wait", {"seconds": 0}, {"X-Request-ID": "order-42"})
        assert status == 200 and headers.get_all("X-Request-ID") == ["order-42"]  # the client's id, once
        status, headers, body = _post(port, "/broken", {"a": 1})
        generated = headers["X-Request-ID"]
        # Serve gives a request without one an id (a UUID), which it uses in its own logs too.
        assert status == 500 and len(generated) >= 16 and "broken on purpose" in body["error"]
        status, headers, _ = _post(port, "/wait", {"seconds": 0}, {"X-Request-ID": "bad id\twith tab"})
        assert status == 200 and headers.get_all("X-Request-ID") == ["bad id\twith tab"]  # Serve's echo, once
        console = _console_after(server)
    assert re.search(r"POST /wait 200 [0-9.]+ms request_id=order-42", console), console
    assert re.search(rf"POST /broken 500 [0-9.]+ms request_id={generated}", console), console
    assert "POST /wait 200" in console and "request_id=bad id\\twith tab\n" in console  # escaped: one line
    assert f"API broken failed, request_id={generated}" in console
    assert "Traceback" in console and "ValueError: broken on purpose" in console
    assert "Connecting to existing Serve app" not in console and "Token authentication" not in console


def test_json_log_lines_and_no_access_log(subprocess_env):
    with _serving(subprocess_env, "--log-format", "json", "--no-access-log") as (server, port):
        assert _post(port, "/wait", {"seconds": 0})[0] == 200
        _, headers, _ = _post(port, "/broken", {"b": 2})
        console = _console_after(server)
    records = [json.loads(line) for line in console.splitlines() if line.startswith("{")]
    assert [r["kind"] for r in records] == ["failure"], console  # failures only: no access lines
    assert records[0]["request_id"] == headers["X-Request-ID"] and "ValueError" in records[0]["traceback"]
    assert records[0]["api"] == "broken" and records[0]["time"].startswith("20")


def test_the_haproxy_of_a_server_killed_with_sigkill_is_ended_by_the_next_one(tmp_path):
    from raystore._private.deploy.local import HAProxyIngress, _process_identity

    fake_haproxy = tmp_path / "haproxy"  # a process that looks like Serve's haproxy to /proc
    fake_haproxy.symlink_to(sys.executable)
    sleep = "import time; time.sleep(120)"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    dead, alive, starting = HAProxyIngress(), HAProxyIngress(), HAProxyIngress()
    Path(dead.folder, "owner").write_text(f"{gone.pid} 1")  # its server died without cleaning up
    Path(starting.folder, "owner").write_text("")  # another server made its folder, owner not yet written
    orphan = subprocess.Popen([str(fake_haproxy), "-c", sleep, "-f", f"{dead.folder}/node/haproxy.cfg"])
    running = subprocess.Popen([str(fake_haproxy), "-c", sleep, "-f", f"{alive.folder}/node/haproxy.cfg"])
    try:
        deadline = time.monotonic() + 10
        while orphan.pid not in dead.pids():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert _process_identity(os.getpid()) == Path(alive.folder, "owner").read_text()
        assert orphan.pid in HAProxyIngress.clean_up_after_dead_servers()
        assert orphan.wait(timeout=10) == -signal.SIGKILL and not Path(dead.folder).exists()
        assert running.poll() is None and Path(alive.folder).exists()  # a live server's is left alone
        assert Path(starting.folder).exists()  # so is one being made
    finally:
        for process in (orphan, running):
            process.kill()
            process.wait()
        alive.stop()
        starting.stop()
