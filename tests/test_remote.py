"""Remote storage on a real S3 server (SeaweedFS): archives on S3, a store rooted on S3 with the
node cache, push/pull, and clear errors when the remote is unreachable or refuses us."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from archives import read_archive, write_archive
from conftest import VENV_BIN

import raystore
from raystore.exceptions import InvalidArgument, NotFound, StoreError

pytestmark = pytest.mark.s3


def test_export_import_through_s3(s3_bucket, iris_clf, iris, capsys):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf, labels={"k": "v"})
    where = raystore.models.export_model(saved.tag, f"{s3_bucket}/exports/", compression="gz")
    assert where == f"{s3_bucket}/exports/iris_clf-{saved.tag.version}.raymodel.gz"
    raystore.models.delete(saved.tag)
    assert raystore.models.import_model(where).tag == saved.tag
    X, _ = iris
    np.testing.assert_array_equal(raystore.sklearn.load_model(saved.tag).predict(X), iris_clf.predict(X))
    assert raystore.models.get(saved.tag).info.labels == {"k": "v"}


def test_store_root_on_s3_across_processes(s3_bucket, subprocess_env, monkeypatch, tmp_path):
    root = f"{s3_bucket}/team-store"
    monkeypatch.setenv("RAYSTORE_HOME", root)
    env = {**subprocess_env, **{k: os.environ[k] for k in ("RAYSTORE_HOME", "RAYSTORE_CACHE_DIR")}}
    out = subprocess.run(
        [sys.executable, "-m", "remote_worker", "save", "shared"], env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    tag = out.stdout.strip()

    model = raystore.models.get("shared:latest")
    assert str(model.tag) == tag and model.path.startswith(f"{s3_bucket}/team-store/models/shared/")
    assert raystore.picklable_model.load_model("shared")["weights"].sum() == np.arange(1000.0).sum()
    assert model.custom_objects == {"k": 3}
    raystore.models.verify(tag)
    assert [str(m.tag) for m in raystore.models.list()] == [tag]

    # four fresh processes (another node's loaders) start together: exactly one downloads
    env["RAYSTORE_CACHE_DIR"] = str(tmp_path / "other-node-cache")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "remote_worker", "load", tag], env=env, stdout=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [r["downloaded"] for r in results].count(True) == 1
    assert {r["path"] for r in results} == {results[0]["path"]}
    assert all(r["sum"] == np.arange(1000.0).sum() for r in results)

    raystore.models.delete(tag)
    assert raystore.models.list() == []


def test_push_pull_identical_and_conflicts(s3_bucket, monkeypatch, iris_clf, capsys, tmp_path):
    monkeypatch.setenv("RAYSTORE_REMOTE", f"{s3_bucket}/remote")
    older = raystore.sklearn.save_model("iris_clf", iris_clf, metadata={"n": 1})
    saved = raystore.sklearn.save_model("iris_clf", iris_clf, metadata={"n": 2})
    raystore.models.push(older.tag)
    remote = raystore.models.push("iris_clf:latest")
    assert remote.tag == saved.tag and "pushed to" in capsys.readouterr().err
    assert [m.tag for m in raystore.models.list(remote=True)] == [saved.tag, older.tag]
    raystore.models.push(saved.tag)
    assert "identical content; nothing to do" in capsys.readouterr().err

    raystore.models.delete_all("iris_clf")
    pulled = raystore.models.pull("iris_clf")  # latest resolves against the remote
    assert pulled.tag == saved.tag and pulled.info.metadata == {"n": 2}
    raystore.models.verify(saved.tag)
    raystore.models.pull(saved.tag)
    assert "identical content; nothing to do" in capsys.readouterr().err

    # same tag, different content locally: both directions refuse without force
    archive = tmp_path / "a.raymodel"
    raystore.models.export_model(saved.tag, str(archive), quiet=True)
    prefix, files = read_archive(archive)
    files["custom_objects.pkl"] = __import__("cloudpickle").dumps({"changed": True})
    raystore.models.import_model(str(write_archive(tmp_path / "b.raymodel", prefix, files)), force=True, quiet=True)
    with pytest.raises(StoreError, match="already exists in .*remote with different content"):
        raystore.models.push(saved.tag)
    with pytest.raises(StoreError, match="with different content"):
        raystore.models.pull(saved.tag)
    raystore.models.push(saved.tag, force=True)
    raystore.models.delete(saved.tag)
    assert raystore.models.pull(saved.tag).custom_objects == {"changed": True}
    raystore.models.verify(saved.tag)


def test_pull_missing_tag_and_no_remote(s3_bucket, monkeypatch):
    with pytest.raises(InvalidArgument, match="no remote configured"):
        raystore.models.pull("iris_clf")
    monkeypatch.setenv("RAYSTORE_REMOTE", f"{s3_bucket}/remote")
    with pytest.raises(NotFound, match="no model named 'iris_clf'"):
        raystore.models.pull("iris_clf")
    assert raystore.models.list(remote=True) == []


@pytest.mark.parametrize(
    "setting, words",
    [
        ({"RAYSTORE_S3_ENDPOINT_URL": "http://127.0.0.1:9"}, "cannot reach"),
        ({"AWS_SECRET_ACCESS_KEY": "wrong-secret"}, "access denied"),
        ({"RAYSTORE_REMOTE": "s3://no-such-bucket-here/x"}, "does not exist"),
    ],
)
def test_remote_failures_are_one_line_and_leave_nothing(s3_bucket, monkeypatch, iris_clf, setting, words, store_home):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf)
    monkeypatch.setenv("RAYSTORE_REMOTE", f"{s3_bucket}/remote")
    for key, value in setting.items():
        monkeypatch.setenv(key, value)
    start = time.time()
    with pytest.raises(StoreError, match=words):
        raystore.models.push(saved.tag, quiet=True)
    with pytest.raises(StoreError, match=words):
        raystore.models.pull(saved.tag, quiet=True)
    assert time.time() - start < 60
    out = subprocess.run([str(VENV_BIN / "raystore"), "models", "push", str(saved.tag)], capture_output=True, text=True)
    assert out.returncode == 1 and words in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert [m.tag for m in raystore.models.list()] == [saved.tag]
    assert not (store_home / ".tmp").exists() or list((store_home / ".tmp").iterdir()) == []


def test_killed_push_leaves_nothing_visible(s3_bucket, monkeypatch, subprocess_env):
    monkeypatch.setenv("RAYSTORE_REMOTE", f"{s3_bucket}/remote")
    big = raystore.picklable_model.save_model(
        "big", np.random.default_rng(0).random(12_000_000), signatures={"sum": {}}
    )
    env = {**subprocess_env, "RAYSTORE_REMOTE": os.environ["RAYSTORE_REMOTE"]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "remote_worker", "push", str(big.tag)], env=env, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout.readline().strip() == "start"
    time.sleep(0.4)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    remote_models = raystore.models.list(remote=True)
    if remote_models:  # the push won the race: then it must be complete
        from raystore._private.store import remote_store

        remote_store().verify(big.tag)
    raystore.models.push(big.tag, quiet=True)
    from raystore._private.store import remote_store

    remote_store().verify(big.tag)
    raystore.models.delete(big.tag)
    assert raystore.models.pull(big.tag, quiet=True).size == big.size
