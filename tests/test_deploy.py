"""`raystore deploy`, `status` and `delete` against a real `ray start --head` cluster, through its
Serve REST API with Ray's auth token."""

import json
import os
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from conftest import VENV_BIN
from raycluster import free_port, start_head

pytestmark = pytest.mark.ray
IRIS = Path(__file__).resolve().parents[1] / "examples" / "iris"


@pytest.fixture(scope="module")
def head_cluster(tmp_path_factory):
    """A one-node cluster from `ray start --head --block`, stopped by signalling its process group
    (not `ray stop`, which would also end this test session's own Ray)."""
    # 3 logical CPUs: a --model server's ingress and model, and one more model loaded over V2
    node, _, dashboard = start_head(tmp_path_factory.mktemp("ray-head"), dict(os.environ), num_cpus=3)
    try:
        yield dashboard
    finally:
        node.stop()


@pytest.fixture(scope="module")
def http_port():
    """The cluster's one Serve HTTP port: Serve keeps the http_options of the first deploy while it
    runs, and deleting an application (as `raystore delete` does) leaves it running."""
    return free_port()


def raystore_cli(*args, env=None, timeout=300):
    return subprocess.run([str(VENV_BIN / "raystore"), *args], capture_output=True, text=True, env=env, timeout=timeout)


def train_iris(env: dict) -> str:
    """The iris example's model saved in `env`'s store, as its script saves it; returns the tag."""
    out = subprocess.run(
        [
            str(VENV_BIN / "python"),
            "-c",
            f"import sys; sys.path.insert(0, {str(IRIS)!r}); from train import train_and_save; "
            "print(train_and_save().tag)",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_deploy_status_delete(head_cluster, http_port, tmp_path, subprocess_env):
    env = dict(subprocess_env)
    train_iris(env)
    config_file = tmp_path / "iris.yaml"
    out = raystore_cli("build", "service:svc", "--working-dir", str(IRIS), "-o", str(config_file), env=env)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(config_file.read_text())
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    config_file.write_text(yaml.safe_dump(config))

    out = raystore_cli("deploy", str(config_file), "--address", head_cluster, env=env)
    assert out.returncode == 0, out.stderr
    assert f"Deployed iris_classifier to {head_cluster}" in out.stdout and "RUNNING" in out.stderr

    request = urllib.request.Request(
        f"http://127.0.0.1:{http_port}/classify",
        data=b"[[5.9, 3.0, 5.1, 1.8]]",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert json.loads(response.read()) == [2]

    out = raystore_cli("status", "--address", head_cluster, env=env)
    assert out.returncode == 0 and "iris_classifier" in out.stdout and "RUNNING" in out.stdout

    out = raystore_cli("delete", "iris_classifier", "--address", head_cluster, env=env)
    assert out.returncode == 0 and "Deleted iris_classifier" in out.stdout
    out = raystore_cli("delete", "iris_classifier", "--address", head_cluster, env=env)
    assert out.returncode == 1 and "no application 'iris_classifier'" in out.stderr


def test_missing_token_and_unreachable_cluster_are_explained(head_cluster, subprocess_env, tmp_path):
    env = {**subprocess_env, "HOME": str(tmp_path), "RAY_AUTH_TOKEN_PATH": str(tmp_path / "none")}
    env.pop("RAY_AUTH_TOKEN", None)
    out = raystore_cli("status", "--address", head_cluster, env=env)
    token_required = out.returncode == 1
    if token_required:  # clusters started with token auth (Ray 2.60's default here)
        assert "wants a Ray auth token" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = raystore_cli("status", "--address", f"http://127.0.0.1:{free_port()}", env=env)
    assert out.returncode == 1 and "cannot reach the Ray dashboard" in out.stderr


def test_deploy_models_over_v2(head_cluster, http_port, tmp_path, subprocess_env):
    env = dict(subprocess_env)
    tag = train_iris(env)
    config_file = tmp_path / "models.yaml"
    out = raystore_cli("build", "--model", "iris_clf:latest", "-o", str(config_file), env=env)
    assert out.returncode == 0, out.stderr
    config = yaml.safe_load(config_file.read_text())
    assert config["applications"][0]["args"] == {"models": [tag]}
    config["http_options"] = {"host": "127.0.0.1", "port": http_port}
    config_file.write_text(yaml.safe_dump(config))
    out = raystore_cli("deploy", str(config_file), "--address", head_cluster, env=env)
    assert out.returncode == 0, out.stderr
    try:
        body = {"inputs": [{"name": "input__0", "datatype": "FP64", "shape": [1, 4], "data": [5.9, 3.0, 5.1, 1.8]}]}
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v2/models/iris_clf/infer",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        assert answer["model_name"] == "iris_clf" and answer["model_version"] == tag.split(":")[1]
        assert answer["outputs"][0]["data"] == [2]

        # a newer version loaded over the repository API beside the deployed config, as a Serve
        # application of its own; the server is not deleted while it runs
        newer = train_iris(env)
        loaded = _post(f"http://127.0.0.1:{http_port}/v2/repository/models/{newer}/load")
        assert loaded == (200, b""), loaded[1].decode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/v2/models/iris_clf/versions/{newer.split(':')[1]}/infer",
            data=json.dumps(body).encode(),
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert json.loads(response.read())["model_version"] == newer.split(":")[1]
        out = raystore_cli("delete", "models", "--address", head_cluster, env=env)
        assert out.returncode == 1 and "models loaded over the V2 repository API" in out.stderr
        assert f"['iris_clf:{newer.split(':')[1]}']" in out.stderr
        unloaded = _post(f"http://127.0.0.1:{http_port}/v2/repository/models/{newer}/unload")
        assert unloaded == (200, b""), unloaded[1].decode()
    finally:
        out = raystore_cli("delete", "models", "--address", head_cluster, env=env)
    assert out.returncode == 0, out.stderr


def _post(url: str) -> tuple[int, bytes]:
    """An empty POST: the status and the body, an error's too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=b"", method="POST"), timeout=200) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
