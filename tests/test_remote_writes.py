"""Writes to a remote store (SeaweedFS) never hide or destroy a committed version: a forced push
that fails or is killed leaves the old version readable, an interrupted push removes only what
it wrote, and what interrupted writes leave behind is found and removed by `models gc`. Locally, a
forced replace swaps the new version in atomically."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
from archives import read_archive, write_archive

import raystore
from raystore._private.store import default_store, manifest, remote_store
from raystore._private.store.gc import _host
from raystore.exceptions import NotFound, StoreError


def _replace_locally(tag, tmp_path: Path, custom: dict, label: str | None = None) -> None:
    """The same tag with different content in the local store (as an import --force makes it)."""
    archive = tmp_path / f"{uuid.uuid4().hex}.raymodel"
    raystore.models.export_model(tag, str(archive), quiet=True)
    prefix, files = read_archive(archive)
    files["custom_objects.pkl"] = cloudpickle.dumps(custom)
    if label is not None:
        files["model.yaml"] = files["model.yaml"].replace(b"labels: {}", f"labels:\n  replaced: {label}".encode())
    raystore.models.import_model(
        str(write_archive(tmp_path / "changed.raymodel", prefix, files)), force=True, quiet=True
    )


def _remote_custom_objects(tag) -> dict:
    remote = remote_store()
    remote.verify(tag)  # complete, every file as its manifest says
    base = remote.files_dir(remote.get(tag).tag)
    with remote.open_file(remote.get(tag).tag, "custom_objects.pkl", base=base) as f:
        return cloudpickle.loads(f.read())


def _generations(store, tag) -> set[str]:
    """The generation folders in a version's folder, as the server lists its objects now."""
    store.fs.invalidate_cache()
    folder = store._version_dir(tag)
    children = {p[len(folder) + 1 :].split("/", 1)[0] for p in store.fs.find(folder)}
    return {c[len(manifest.GENERATION_PREFIX) :] for c in children if c.startswith(manifest.GENERATION_PREFIX)}


@pytest.fixture
def remote(s3_bucket, monkeypatch) -> str:
    monkeypatch.setenv("RAYSTORE_REMOTE", f"{s3_bucket}/remote")
    return f"{s3_bucket}/remote"


@pytest.mark.s3
def test_a_forced_push_that_fails_leaves_the_remote_version_as_it_was(remote, iris_clf, tmp_path):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf, custom_objects={"v": 1})
    raystore.models.push(saved.tag, quiet=True)
    _replace_locally(saved.tag, tmp_path, {"v": 2})
    local_file = default_store().local_copy(saved.tag) / "custom_objects.pkl"
    local_file.write_bytes(local_file.read_bytes() + b"rot")  # the local copy went bad after the import
    with pytest.raises(StoreError, match="custom_objects.pkl"):
        raystore.models.push(saved.tag, force=True, quiet=True)
    assert _remote_custom_objects(saved.tag) == {"v": 1}  # the remote's good version survived
    assert raystore.models.gc(remote=True, older_than_s=0) == []  # and the failed push left nothing


@pytest.mark.s3
def test_a_killed_forced_push_leaves_one_complete_version(remote, subprocess_env, tmp_path):
    big = raystore.picklable_model.save_model(
        "big", np.random.default_rng(0).random(12_000_000), signatures={"sum": {}}, custom_objects={"v": 1}
    )
    raystore.models.push(big.tag, quiet=True)
    _replace_locally(big.tag, tmp_path, {"v": 2})
    env = {**subprocess_env, "RAYSTORE_REMOTE": remote}
    push = [sys.executable, "-m", "remote_worker", "push", str(big.tag), "force"]
    proc = subprocess.Popen(push, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "start"
    time.sleep(0.6)  # mid-upload of the 96 MB array
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _remote_custom_objects(big.tag) in ({"v": 1}, {"v": 2})  # old or new, complete: never none
    raystore.models.push(big.tag, force=True, quiet=True)
    assert _remote_custom_objects(big.tag) == {"v": 2}
    leftovers = raystore.models.gc(remote=True, older_than_s=0, dry_run=True)
    assert all("multipart" in f["what"] or "replaced or interrupted" in f["what"] for f in leftovers), leftovers
    raystore.models.gc(remote=True, older_than_s=0)
    assert raystore.models.gc(remote=True, older_than_s=0, dry_run=True) == []
    assert _remote_custom_objects(big.tag) == {"v": 2}  # gc never touches the committed generation


@pytest.mark.s3
def test_an_interrupted_push_removes_only_what_it_wrote(remote, iris_clf):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf)
    src, dst = default_store(), remote_store()
    entries = src.get(saved.tag).manifest
    base = src.files_dir(saved.tag)
    first = dst.writer(saved.tag, entries, force=True)
    second = dst.writer(saved.tag, entries, force=True)
    for writer in (first, second):
        writer.write_all(lambda rel: src.open_file(saved.tag, rel, base=base))
    first.commit()
    second.abort()  # interrupted after the first committed: it used to delete the whole version
    dst.verify(saved.tag)
    # Both committing (force) ends with one complete version too, the last one's.
    third = dst.writer(saved.tag, entries, force=True)
    third.write_all(lambda rel: src.open_file(saved.tag, rel, base=base))
    third.commit()
    # The replaced generation stays for readers still copying it, until a sweep an hour later.
    assert _generations(dst, saved.tag) == {first.generation, third.generation}
    assert [f["where"].endswith(first.generation) for f in raystore.models.gc(remote=True, older_than_s=0)] == [True]
    assert _generations(dst, saved.tag) == {third.generation}
    dst.verify(saved.tag)
    # Two pushes of a new version racing: the second to commit finds the first's identical content
    # and keeps it, removing only its own upload.
    fresh = raystore.sklearn.save_model("racing", iris_clf)
    fresh_entries, fresh_base = src.get(fresh.tag).manifest, src.files_dir(fresh.tag)
    racers = [dst.writer(fresh.tag, fresh_entries, force=False) for _ in range(2)]
    for writer in racers:
        writer.write_all(lambda rel: src.open_file(fresh.tag, rel, base=fresh_base))
    for writer in racers:
        writer.commit()
    assert dst.files_dir(fresh.tag).endswith(racers[0].generation)
    assert _generations(dst, fresh.tag) == {racers[0].generation}
    dst.verify(fresh.tag)


@pytest.mark.s3
def test_two_pushes_of_different_content_racing_end_with_one_and_an_error_for_the_other(
    remote, iris_clf, tmp_path, monkeypatch
):
    saved = raystore.sklearn.save_model("racing", iris_clf, custom_objects={"who": "first"})
    src, dst = default_store(), remote_store()
    first = dst.writer(saved.tag, src.get(saved.tag).manifest, force=False)
    first.write_all(lambda rel: src.open_file(saved.tag, rel, base=src.files_dir(saved.tag)))
    _replace_locally(saved.tag, tmp_path, {"who": "second"})  # the same tag, other content
    second = dst.writer(saved.tag, src.get(saved.tag).manifest, force=False)
    second.write_all(lambda rel: src.open_file(saved.tag, rel, base=src.files_dir(saved.tag)))
    first.commit()
    # The second checked for a committed version just before the first committed: only the
    # write of the manifest itself (a conditional create) can tell it now.
    real_committed, checks = dst._committed, []

    def committed_as_the_second_saw_it(tag):
        checks.append(tag)
        return None if len(checks) == 1 else real_committed(tag)

    monkeypatch.setattr(dst, "_committed", committed_as_the_second_saw_it)
    with pytest.raises(StoreError, match="was written to .* by someone else meanwhile"):
        second.commit()
    monkeypatch.setattr(dst, "_committed", real_committed)
    assert _remote_custom_objects(saved.tag) == {"who": "first"}  # complete, and the first's
    assert _generations(dst, saved.tag) == {first.generation}  # the second removed its upload


@pytest.mark.s3
def test_gc_finds_interrupted_writes_and_multipart_uploads(remote, iris_clf):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf)
    raystore.models.push(saved.tag, quiet=True)
    src, dst = default_store(), remote_store()
    entries = src.get(saved.tag).manifest
    base = src.files_dir(saved.tag)
    stray = dst.writer(saved.tag, entries, force=True)  # a push killed before its commit
    stray.write_all(lambda rel: src.open_file(saved.tag, rel, base=base))
    never = raystore.sklearn.save_model("never_committed", iris_clf)
    lost = dst.writer(never.tag, src.get(never.tag).manifest, force=False)
    lost.write_all(lambda rel: src.open_file(never.tag, rel, base=src.files_dir(never.tag)))
    bucket, _, key = f"{dst.root}/models/iris_clf/{saved.tag.version}/.g-{uuid.uuid4().hex}/big.bin".partition("/")
    upload = dst.fs.call_s3("create_multipart_upload", Bucket=bucket, Key=key)
    dst.fs.call_s3("upload_part", Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 1024)

    assert raystore.models.gc(remote=True, dry_run=True) == []  # all of it is younger than an hour
    found = raystore.models.gc(remote=True, older_than_s=0, dry_run=True)
    kinds = sorted(f["what"] for f in found)
    assert kinds == [
        "an incomplete multipart upload",
        "files of a replaced or interrupted write",
        "files of a replaced or interrupted write",
    ], found
    assert any(stray.generation in f["where"] for f in found)
    assert raystore.models.gc(remote=True, older_than_s=0) == found
    assert raystore.models.gc(remote=True, older_than_s=0, dry_run=True) == []
    uploads = dst.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key)
    assert uploads.get("Uploads", []) == []
    dst.verify(saved.tag)  # the committed version is untouched
    with pytest.raises(NotFound):
        dst.get(never.tag)


@pytest.mark.s3
def test_versions_written_before_generations_stay_readable_and_replaceable(remote, iris_clf, tmp_path):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf, custom_objects={"v": 1})
    src, dst = default_store(), remote_store()
    folder = f"{dst.root}/models/iris_clf/{saved.tag.version}"
    entries = src.get(saved.tag).manifest
    for entry in entries:  # the old layout: files beside model.yaml, a manifest without a generation
        if entry.path != manifest.INFO_FILE:
            dst.fs.pipe_file(f"{folder}/{entry.path}", (src.local_copy(saved.tag) / entry.path).read_bytes())
    dst.fs.pipe_file(f"{folder}/{manifest.MANIFEST_FILE}", manifest.dumps(entries).encode())
    dst.fs.pipe_file(f"{folder}/{manifest.INFO_FILE}", (src.local_copy(saved.tag) / manifest.INFO_FILE).read_bytes())
    dst.verify(saved.tag)
    raystore.models.delete(saved.tag)
    assert raystore.models.pull(saved.tag, quiet=True).custom_objects == {"v": 1}
    _replace_locally(saved.tag, tmp_path, {"v": 2})
    raystore.models.push(saved.tag, force=True, quiet=True)
    assert _remote_custom_objects(saved.tag) == {"v": 2}
    (old_layout,) = raystore.models.gc(remote=True, older_than_s=0)  # kept for readers, then swept
    assert old_layout["what"] == "files of a replaced write (the layout before generations)"
    dst.fs.invalidate_cache()
    left = {p.rsplit("/", 1)[-1] for p in dst.fs.find(folder, maxdepth=1)}
    assert left == {manifest.INFO_FILE, manifest.MANIFEST_FILE}
    assert _remote_custom_objects(saved.tag) == {"v": 2}


def test_a_local_forced_replace_never_hides_the_version(iris_clf, tmp_path):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf, custom_objects={"v": 0})
    archives = []
    for v in (1, 2):
        archive = tmp_path / f"v{v}.raymodel"
        raystore.models.export_model(saved.tag, str(archive), quiet=True)
        prefix, files = read_archive(archive)
        files["custom_objects.pkl"] = cloudpickle.dumps({"v": v})
        archives.append(write_archive(tmp_path / f"w{v}.raymodel", prefix, files))
    misses, reads, done = [], [0], threading.Event()

    def read_all_the_time():
        store = default_store()
        while not done.is_set():
            try:
                store.get(saved.tag)
                reads[0] += 1
            except NotFound as exc:
                misses.append(str(exc))

    reader = threading.Thread(target=read_all_the_time)
    reader.start()
    try:
        for i in range(30):
            raystore.models.import_model(str(archives[i % 2]), force=True, quiet=True)
    finally:
        done.set()
        reader.join()
    assert misses == [] and reads[0] > 0
    assert raystore.models.get(saved.tag).custom_objects == {"v": 2}


def test_staging_of_a_dead_process_is_removed_by_the_next_write(iris_clf, store_home):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = _host()
    stale = store_home / ".tmp" / f"stage-{host}-{gone.pid}-{uuid.uuid4().hex}"
    stale.mkdir(parents=True)
    (stale / "half-written.bin").write_bytes(b"x" * 1000)
    alive = store_home / ".tmp" / f"stage-{host}-{os.getpid()}-{uuid.uuid4().hex}"
    alive.mkdir()
    found = raystore.models.gc(dry_run=True)
    assert [f["where"] for f in found if f["where"].startswith(str(store_home))] == [str(stale)]
    raystore.sklearn.save_model("iris_clf", iris_clf)
    assert not stale.exists() and alive.exists()  # another live process's staging is left alone


def test_an_export_killed_earlier_leaves_no_part_file_after_the_next(iris_clf, tmp_path):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    host = _host()
    target = tmp_path / "iris.raymodel"
    killed = tmp_path / f"iris.raymodel.part-export-{host}-{gone.pid}-{uuid.uuid4().hex}"
    killed.write_bytes(b"half an archive")
    other = tmp_path / f"other.raymodel.part-export-{host}-{gone.pid}-{uuid.uuid4().hex}"
    other.write_bytes(b"not ours to judge")
    raystore.models.export_model(saved.tag, str(target), quiet=True)
    assert target.exists() and not killed.exists() and other.exists()


def test_a_silent_endpoint_is_a_clear_error_in_seconds(monkeypatch, store_home):
    """A server that accepts connections and never answers: the error names it, and comes after
    two read timeouts, not after minutes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    held = []
    stop = threading.Event()

    def accept_and_say_nothing():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept_and_say_nothing, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{listener.getsockname()[1]}"
    monkeypatch.setenv("RAYSTORE_S3_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("RAYSTORE_S3_READ_TIMEOUT", "1.5")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("RAYSTORE_REMOTE", "s3://silent-bucket/store")
    try:
        for attempt in (
            lambda: raystore.models.list(remote=True),
            lambda: raystore.models.import_model("s3://silent-bucket/a.raymodel", quiet=True),
        ):
            start = time.monotonic()
            with pytest.raises(
                StoreError, match=rf"silent-bucket.*\(endpoint {endpoint}\) did not answer within 1.5 s"
            ):
                attempt()
            assert time.monotonic() - start < 15  # two requests of two attempts at most
    finally:
        stop.set()
        thread.join()
        for connection in held:
            connection.close()
        listener.close()


@pytest.mark.s3
def test_importing_from_s3_with_bad_credentials_says_so(s3_env, s3_bucket, monkeypatch, iris_clf):
    saved = raystore.sklearn.save_model("iris_clf", iris_clf)
    where = raystore.models.export_model(saved.tag, f"{s3_bucket}/exports/", quiet=True)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(StoreError, match="access denied") as err:
        raystore.models.import_model(where, quiet=True)
    assert "no archive" not in str(err.value)


@pytest.mark.s3
def test_a_failed_model_yaml_upload_after_the_switch_keeps_the_new_version(remote, iris_clf, tmp_path):
    """The manifest is the commit point: when the model.yaml beside it then fails to upload, the
    version is the new generation, complete, and the writer's abort leaves it in place."""
    saved = raystore.sklearn.save_model("iris_clf", iris_clf, custom_objects={"v": 1})
    raystore.models.push(saved.tag, quiet=True)
    _replace_locally(saved.tag, tmp_path, {"v": 2}, label="second")
    dst = remote_store()
    real_pipe = type(dst.fs).pipe_file
    root_info = f"{dst._version_dir(saved.tag)}/{manifest.INFO_FILE}"

    def failing_pipe(fs, path, *args, **kwargs):
        if path == root_info:
            raise ConnectionResetError("the network went away")
        return real_pipe(fs, path, *args, **kwargs)

    src = default_store()
    entries, base = src.snapshot(saved.tag)
    writer = dst.writer(saved.tag, entries, force=True)
    writer.write_all(lambda rel: src.open_file(saved.tag, rel, base=base))
    dst.fs.pipe_file = failing_pipe.__get__(dst.fs)
    try:
        with pytest.raises(Exception, match="network went away"):
            writer.commit()
        writer.abort()  # what put() does after a failed commit
    finally:
        del dst.fs.pipe_file
    assert remote_store().get(saved.tag).info.tag == saved.tag
    assert _remote_custom_objects(saved.tag) == {"v": 2}  # the new generation, whole
    # A reader sees the generation's own model.yaml, not the older one beside the manifest.
    assert src.get(saved.tag).info.labels == {"replaced": "second"}
    assert remote_store().get(saved.tag).info.labels == {"replaced": "second"}
    remote_store().verify(saved.tag)


def test_gc_never_takes_a_live_process_staging_however_old(store_home):
    alive = store_home / ".tmp" / f"stage-{_host()}-{os.getpid()}-{uuid.uuid4().hex}"
    alive.mkdir(parents=True)
    os.utime(alive, (time.time() - 10 * 86400, time.time() - 10 * 86400))  # ten days untouched
    assert raystore.models.gc(older_than_s=0, dry_run=True) == [] or all(
        f["where"] != str(alive) for f in raystore.models.gc(older_than_s=0, dry_run=True)
    )
    raystore.models.gc(older_than_s=0)
    assert alive.exists()
