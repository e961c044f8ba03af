"""The examples run end to end, as the README says."""

import subprocess
import sys
from pathlib import Path

import raystore

ROOT = Path(__file__).resolve().parents[1]


def test_iris_quickstart(subprocess_env):
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "iris" / "quickstart.py")],
        env=subprocess_env, capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert "Prediction for [5.9, 3.0, 5.1, 1.8]: 2 (virginica)" in out.stdout
    (model,) = raystore.models.list("iris_clf")
    assert f"Saved {model}" in out.stdout
    assert model.info.labels == {"owner": "quickstart", "stage": "dev"}
    assert model.info.metadata["accuracy"] > 0.9
