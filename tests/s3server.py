"""Starting and stopping a throwaway SeaweedFS S3 server on loopback (tests and benchmarks)."""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


@dataclass
class S3Server:
    endpoint: str
    key: str
    secret: str
    process: subprocess.Popen
    log_path: Path

    def stop(self) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=3)  # it may linger flushing; its data is throwaway
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def _port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """`count` free ports whose gRPC twins (port + 10000), which SeaweedFS also opens, are free too."""
    for _ in range(200):
        base = random.randint(20000, 29000)
        ports = [base + 7 * i for i in range(count)]
        if all(_port_is_free(p) and _port_is_free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free ports for SeaweedFS")


def start_seaweedfs(weed: Path, data: Path, key: str, secret: str, timeout: float = 60) -> S3Server:
    """Start `weed server -s3` with one identity (`key`/`secret`) and wait until S3 answers."""
    data.mkdir(parents=True, exist_ok=True)
    config = data / "s3.json"
    identity = {
        "name": "raystore",
        "credentials": [{"accessKey": key, "secretKey": secret}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }
    config.write_text(json.dumps({"identities": [identity]}))
    s3, master, volume, filer = _free_ports(4)
    cmd = [
        str(weed),
        "server",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-s3",
        f"-s3.port={s3}",
        f"-s3.config={config}",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",  # or it dies when 8181/9101 are taken
        "-master.volumeSizeLimitMB=256",
        "-volume.max=100",
    ]
    log_path = data / "weed.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    server = S3Server(f"http://127.0.0.1:{s3}", key, secret, proc, log_path)
    deadline = time.time() + timeout
    while True:
        try:
            urllib.request.urlopen(server.endpoint, timeout=1)
            return server
        except urllib.error.HTTPError:
            return server  # 403 without credentials: the server is up
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                server.stop() if proc.poll() is None else None
                raise RuntimeError(f"SeaweedFS did not start; see {log_path}") from None
            time.sleep(0.25)
