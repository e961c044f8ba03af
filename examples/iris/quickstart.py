"""The iris quickstart: train and save a classifier, serve it over HTTP with `raystore serve` on a
local Ray, ask it for a prediction, print the answer, and shut everything down.

Run with `make quickstart` (or `python examples/iris/quickstart.py` in the project's venv).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from sklearn.datasets import load_iris
from sklearn.svm import SVC

import raystore

HERE = Path(__file__).resolve().parent
PORT = int(os.environ.get("QUICKSTART_PORT", "3000"))
SAMPLE = [[5.9, 3.0, 5.1, 1.8]]


def train_and_save() -> raystore.Model:
    iris = load_iris()
    clf = SVC(gamma="scale").fit(iris.data, iris.target)
    return raystore.sklearn.save_model(
        "iris_clf",
        clf,
        labels={"owner": "quickstart", "stage": "dev"},
        metadata={"accuracy": float(clf.score(iris.data, iris.target)), "dataset": "sklearn iris"},
        custom_objects={"class_names": list(iris.target_names)},
        signatures={"predict": {"batchable": True, "batch_dim": 0}},
    )


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
    saved = train_and_save()
    print(f"Saved {saved} to {saved.path}")

    raystore_cli = Path(sys.executable).with_name("raystore")
    server = subprocess.Popen(
        [str(raystore_cli), "serve", "service:svc", "--working-dir", str(HERE), "--port", str(PORT)],
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{PORT}"
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
