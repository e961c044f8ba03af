"""Ray nodes started with `ray start --block` on this machine, for the tests and benchmarks that
need a cluster of several nodes. Each node is a process group of our own, stopped by signalling
it (never `ray stop`, which would end every Ray on the machine)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from raystore._private.deploy.local import free_port

RAY = Path(sys.executable).with_name("ray")


def _processes():
    """(pid, parent pid, name) of every process this user can see."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        yield (
            int(entry.name),
            int(stat[stat.rindex(")") + 2 :].split()[1]),
            stat[stat.index("(") + 1 : stat.rindex(")")],
        )


@dataclass
class RayNode:
    process: subprocess.Popen
    log_path: Path

    def raylet_pid(self) -> int:
        """The node's raylet: the child of our `ray start` named raylet."""
        for pid, ppid, name in _processes():
            if ppid == self.process.pid and name == "raylet":
                return pid
        raise RuntimeError(f"no raylet under {self.process.pid}: {self.log_path.read_text()[-2000:]}")

    def actor_pids(self, title_part: str) -> list[int]:
        """The node's worker processes (children of its raylet, in sessions of their own) whose
        title, as Ray sets it (`ray::ServeReplica:APP:DEPLOYMENT...`), contains `title_part`; none
        while the node is starting."""
        raylets = [pid for pid, ppid, name in _processes() if ppid == self.process.pid and name == "raylet"]
        if not raylets:
            return []
        raylet = raylets[0]
        found = []
        for pid, ppid, _ in _processes():
            if ppid != raylet:
                continue
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if title.startswith("ray::") and title_part in title:
                found.append(pid)
        return found

    def stop(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def start_head(temp_dir: Path, env: dict, num_cpus: float, num_gpus: int = 0) -> tuple[RayNode, str, str]:
    """A head node with the dashboard on loopback; returns (node, GCS address, dashboard URL).
    The cluster's session files go under `temp_dir` (keep it short: Ray's socket paths must fit
    in 107 characters), away from any other Ray on this machine."""
    gcs_port, dashboard_port = free_port(), free_port()
    node = _start(
        temp_dir,
        env,
        [
            "--head",
            f"--port={gcs_port}",
            "--include-dashboard=true",
            f"--dashboard-port={dashboard_port}",
            "--dashboard-host=127.0.0.1",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            f"--temp-dir={temp_dir}",
        ],
    )
    dashboard = f"http://127.0.0.1:{dashboard_port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{dashboard}/api/version", timeout=2)
            break
        except urllib.error.HTTPError:
            break  # answering (perhaps 401): up
        except OSError:
            if node.process.poll() is not None or time.time() > deadline:
                node.stop()
                raise RuntimeError(node.log_path.read_text()[-3000:]) from None
            time.sleep(0.5)
    return node, f"127.0.0.1:{gcs_port}", dashboard


def start_worker(temp_dir: Path, env: dict, gcs: str, num_cpus: float, num_gpus: int = 0) -> RayNode:
    """A node joining the cluster at `gcs`, with the head's `temp_dir`."""
    options = [f"--address={gcs}", f"--num-cpus={num_cpus}", f"--num-gpus={num_gpus}", f"--temp-dir={temp_dir}"]
    return _start(temp_dir, env, options)


def _start(temp_dir: Path, env: dict, options: list[str]) -> RayNode:
    temp_dir.mkdir(parents=True, exist_ok=True)
    # A head started by `ray start` checks Ray's auth token (~/.ray/auth_token); a node joining it
    # sends the token only when told that the cluster uses one.
    env = {"RAY_AUTH_MODE": "token", **env}
    log_path = temp_dir / f"ray-start-{len(list(temp_dir.glob('ray-start-*')))}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(RAY), "start", "--block", "--disable-usage-stats", *options],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return RayNode(process, log_path)
