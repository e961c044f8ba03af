"""The iris quickstart: train and save a classifier (`train.py`), serve it over HTTP with
`raystore serve` on a local Ray (`service.py`), ask it for a prediction, print the answer, and shut
everything down.

Run with `make quickstart`, or in the project's venv:

    python examples/iris/quickstart.py [--port 3000] [--metrics-port 8079]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from train import train_and_save

import raystore

HERE = Path(__file__).resolve().parent
SAMPLE = [[5.9, 3.0, 5.1, 1.8]]


def wait_until_ready(url: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"raystore serve exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"the service at {url} was not ready after {timeout_s:.0f} s")


def classify(url: str, rows: list[list[float]]) -> list[int]:
    request = urllib.request.Request(
        f"{url}/classify", data=json.dumps(rows).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def main() -> None:
    parser = argparse.ArgumentParser(description="Train, serve and query the iris classifier.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("QUICKSTART_PORT", "3000")), help="HTTP port")
    parser.add_argument(
        "--metrics-port", type=int, default=int(os.environ.get("QUICKSTART_METRICS_PORT", "8079")), help="metrics port"
    )
    args = parser.parse_args()
    saved = train_and_save()
    print(f"Saved {saved} to {saved.path}")

    raystore_cli = Path(sys.executable).with_name("raystore")
    command = [str(raystore_cli), "serve", "service:svc", "--working-dir", str(HERE), "--port", str(args.port)]
    server = subprocess.Popen([*command, "--metrics-port", str(args.metrics_port)], start_new_session=True)
    url = f"http://127.0.0.1:{args.port}"
    try:
        wait_until_ready(url, server)
        prediction = classify(url, SAMPLE)[0]
        name = raystore.models.get(saved.tag).custom_objects["class_names"][prediction]
        print(f"POST {url}/classify {SAMPLE} -> {prediction} ({name})")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


if __name__ == "__main__":
    main()
