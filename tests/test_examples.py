"""The examples run end to end, as the README says."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import raystore

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray
def test_iris_quickstart_serves_over_http(subprocess_env):
    env = {**subprocess_env, "QUICKSTART_PORT": str(_free_port())}
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "iris" / "quickstart.py")],
        env=env, capture_output=True, text=True, timeout=280,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"/classify [[5.9, 3.0, 5.1, 1.8]] -> 2 (virginica)" in out.stdout
    (model,) = raystore.models.list("iris_clf")
    assert f"Saved {model}" in out.stdout
    assert model.info.labels == {"owner": "quickstart", "stage": "dev"}
    assert model.info.metadata["accuracy"] > 0.9
    assert "Stopped." in out.stderr  # the server shut down cleanly
