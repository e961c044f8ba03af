"""Export and import: round trips to files, folders and URLs, conflicts, and hostile archives."""

import gzip
import subprocess
import tarfile

import numpy as np
import pytest
from archives import manifest_for, member, read_archive, write_archive
from conftest import VENV_BIN

import raystore
from raystore.exceptions import NotFound, StoreError


@pytest.fixture
def saved(iris_clf):
    return raystore.sklearn.save_model(
        "iris_clf", iris_clf, labels={"a": "b"}, custom_objects={"names": ["x", "y", "z"]}
    )


def _assert_store_untouched(store_home, expected_tags):
    assert [str(m.tag) for m in raystore.models.list()] == [str(t) for t in expected_tags]
    tmp = store_home / ".tmp"
    assert not tmp.exists() or list(tmp.iterdir()) == []


@pytest.mark.parametrize("compression", [None, "gz", "zstd"])
def test_round_trip_through_a_file(saved, iris, tmp_path, capsys, compression, store_home):
    X, _ = iris
    dest = tmp_path / "exports" / "iris.raymodel"
    dest.parent.mkdir()
    where = raystore.models.export_model(saved.tag, str(dest), compression=compression)
    assert where == str(dest) and dest.is_file()
    assert f'Model(tag="{saved.tag}") exported to {dest}' in capsys.readouterr().err
    magic = dest.read_bytes()[:4]
    assert (magic[:2] == b"\x1f\x8b") == (compression == "gz")
    assert (magic == b"\x28\xb5\x2f\xfd") == (compression == "zstd")
    assert not list(dest.parent.glob("*.part-*"))

    raystore.models.delete(saved.tag)
    imported = raystore.models.import_model(str(dest))
    assert imported.tag == saved.tag
    assert "imported from" in capsys.readouterr().err
    again = raystore.models.get(saved.tag)
    assert again.info.labels == {"a": "b"} and again.custom_objects["names"] == ["x", "y", "z"]
    assert again.info.creation_time == saved.info.creation_time
    np.testing.assert_array_equal(raystore.sklearn.load_model(saved.tag).predict(X), saved_predict(saved, X))
    raystore.models.verify(saved.tag)


def test_export_refuses_a_missing_folder_and_an_existing_file_without_force(saved, tmp_path):
    from raystore.exceptions import InvalidArgument

    with pytest.raises(InvalidArgument, match="the folder .*typo does not exist; create it first"):
        raystore.models.export_model(saved.tag, str(tmp_path / "typo" / "a.raymodel"), quiet=True)
    assert not (tmp_path / "typo").exists()
    dest = tmp_path / "a.raymodel"
    dest.write_bytes(b"someone else's file")
    with pytest.raises(InvalidArgument, match="a.raymodel exists already; pass force=True"):
        raystore.models.export_model(saved.tag, str(dest), quiet=True)
    assert dest.read_bytes() == b"someone else's file"
    assert raystore.models.export_model(saved.tag, str(dest), force=True, quiet=True) == str(dest)
    assert dest.read_bytes()[:4] != b"some" and not list(tmp_path.glob("*.part-*"))


def saved_predict(model, X):
    return raystore.sklearn.load_model(model).predict(X)


def test_export_into_a_folder_and_a_memory_url(saved, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    name = f"iris_clf-{saved.tag.version}.raymodel"
    assert raystore.models.export_model(saved.tag, quiet=True) == str(tmp_path / name)  # default: cwd
    assert (tmp_path / name).is_file()
    where = raystore.models.export_model(saved.tag, "memory://exports/", quiet=True)
    assert where.startswith("memory://") and where.endswith(f"/exports/{name}")
    raystore.models.delete(saved.tag)
    assert raystore.models.import_model(where, quiet=True).tag == saved.tag


def test_archive_layout_manifest_first(saved, tmp_path):
    dest = tmp_path / "a.raymodel"
    raystore.models.export_model(saved.tag, str(dest), quiet=True)
    with tarfile.open(dest) as tar:
        names = tar.getnames()
    prefix = f"iris_clf/{saved.tag.version}"
    assert names[:2] == [f"{prefix}/manifest.json", f"{prefix}/model.yaml"]
    assert sorted(names[2:]) == [f"{prefix}/custom_objects.pkl", f"{prefix}/saved_model.pkl"]


def test_identical_import_is_a_noop_and_different_needs_force(saved, tmp_path, capsys, store_home):
    dest = tmp_path / "a.raymodel"
    raystore.models.export_model(saved.tag, str(dest), quiet=True)
    raystore.models.import_model(str(dest))
    assert "identical content; nothing to do" in capsys.readouterr().err

    prefix, files = read_archive(dest)
    files["custom_objects.pkl"] = __import__("cloudpickle").dumps({"names": ["changed"]})
    changed = write_archive(tmp_path / "changed.raymodel", prefix, files)
    with pytest.raises(StoreError, match="already exists .* with different content; use --force"):
        raystore.models.import_model(str(changed))
    assert raystore.models.get(saved.tag).custom_objects["names"] == ["x", "y", "z"]
    raystore.models.import_model(str(changed), force=True)
    assert raystore.models.get(saved.tag).custom_objects["names"] == ["changed"]
    raystore.models.verify(saved.tag)


def _hostile_cases(prefix, files):
    """(description, archive kwargs, files override) for archives that must be refused."""
    yield "tar-slip", dict(extra=[member(f"{prefix}/../../evil")]), None
    yield "absolute", dict(extra=[member("/tmp/raystore-evil-absolute")]), None
    yield "symlink", dict(extra=[member(f"{prefix}/link", tarfile.SYMTYPE, linkname="/etc/passwd")]), None
    yield "hardlink", dict(extra=[member(f"{prefix}/hard", tarfile.LNKTYPE, linkname="/etc/passwd")]), None
    yield "device", dict(extra=[member(f"{prefix}/dev", tarfile.CHRTYPE)]), None
    yield "fifo", dict(extra=[member(f"{prefix}/fifo", tarfile.FIFOTYPE)]), None
    yield "unlisted", dict(extra=[member(f"{prefix}/unlisted.bin")]), None
    yield "outside-prefix", dict(extra=[member("other/version1/x.bin")]), None
    yield "missing-file", dict(skip={"saved_model.pkl"}), None
    bad_manifest = manifest_for({**files, "../escape": b"x"})
    yield "manifest-escape", dict(manifest=bad_manifest), None
    flipped = dict(files)
    data = bytearray(flipped["saved_model.pkl"])
    data[len(data) // 2] ^= 0x01
    yield "flipped-byte", dict(manifest=manifest_for(files)), {**files, "saved_model.pkl": bytes(data)}
    yield "bad-manifest-json", dict(manifest=b"{not json"), None


def test_hostile_archives_are_refused_and_store_unchanged(saved, tmp_path, store_home):
    dest = tmp_path / "a.raymodel"
    raystore.models.export_model(saved.tag, str(dest), quiet=True)
    prefix, files = read_archive(dest)
    raystore.models.delete(saved.tag)
    for name, kwargs, override in _hostile_cases(prefix, files):
        archive = write_archive(tmp_path / f"{name}.raymodel", prefix, override or files, **kwargs)
        with pytest.raises(StoreError) as err:
            raystore.models.import_model(str(archive), quiet=True)
        message = str(err.value)
        assert str(archive) in message or "manifest" in message, (name, message)
        _assert_store_untouched(store_home, [])
    assert not (tmp_path.parent / "evil").exists() and not (tmp_path / "evil").exists()
    import os

    assert not os.path.exists("/tmp/raystore-evil-absolute")


def test_corrupt_and_truncated_archives(saved, tmp_path, store_home):
    dest = tmp_path / "a.raymodel"
    raystore.models.export_model(saved.tag, str(dest), quiet=True)
    raystore.models.delete(saved.tag)
    data = dest.read_bytes()
    cases = {
        "truncated": data[: len(data) // 2],
        "header-flip": data[:100] + bytes([data[100] ^ 0xFF]) + data[101:],
        "random": b"\x00garbage" * 300,
        "empty": b"",
        "truncated-gz": gzip.compress(data)[:-200],
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.raymodel"
        path.write_bytes(content)
        with pytest.raises(StoreError, match="not a valid raystore archive|not a raystore archive|empty archive"):
            raystore.models.import_model(str(path), quiet=True)
        _assert_store_untouched(store_home, [])
    with pytest.raises(NotFound, match="no archive at"):
        raystore.models.import_model(str(tmp_path / "nope.raymodel"))


def test_corruption_in_the_store_travels_no_further_than_the_next_import(saved, tmp_path, store_home):
    stored = store_home / "models" / "iris_clf" / saved.tag.version / "saved_model.pkl"
    data = bytearray(stored.read_bytes())
    data[10] ^= 0xFF
    stored.write_bytes(bytes(data))
    dest = tmp_path / "a.raymodel"
    raystore.models.export_model(saved.tag, str(dest), quiet=True)  # copies bytes as stored
    raystore.models.delete(saved.tag)
    with pytest.raises(StoreError, match="saved_model.pkl: sha256 differs from the manifest"):
        raystore.models.import_model(str(dest), quiet=True)
    _assert_store_untouched(store_home, [])


def test_cli_export_import_verify(saved, tmp_path, store_home):
    raystore_cli = str(VENV_BIN / "raystore")
    out = subprocess.run([raystore_cli, "models", "export", "iris_clf", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    archive = tmp_path / f"iris_clf-{saved.tag.version}.raymodel"
    assert f"exported to {archive}" in out.stderr
    out = subprocess.run([raystore_cli, "models", "verify", "iris_clf"], capture_output=True, text=True)
    assert out.returncode == 0 and "is intact: 3 files" in out.stdout
    raystore.models.delete(saved.tag)
    out = subprocess.run([raystore_cli, "models", "import", str(archive)], capture_output=True, text=True)
    assert out.returncode == 0 and "imported from" in out.stderr
    stored = store_home / "models" / "iris_clf" / saved.tag.version / "custom_objects.pkl"
    stored.write_bytes(stored.read_bytes() + b"!")
    out = subprocess.run([raystore_cli, "models", "verify", "iris_clf"], capture_output=True, text=True)
    assert out.returncode == 1
    assert "custom_objects.pkl" in out.stderr and "failed verification" in out.stderr


def _with_info(files: dict, replace: dict[str, str] | None = None, append: str = "") -> dict:
    text = files["model.yaml"].decode()
    for old, new in (replace or {}).items():
        assert old in text, old
        text = text.replace(old, new)
    return {**files, "model.yaml": (text + append).encode()}


def test_model_yaml_arriving_in_an_archive_is_checked_as_a_save_would(saved, tmp_path, store_home):
    """An alias bomb, labels that are not str to str, a version named `latest`, a date in the
    future: each refused with what was wrong, and the store left as it was."""
    import time

    dest = tmp_path / "a.raymodel"
    raystore.models.export_model(saved.tag, str(dest), quiet=True)
    prefix, files = read_archive(dest)
    raystore.models.delete(saved.tag)
    name, version = prefix.split("/")
    bomb = "bomb: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"b{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]\n"
        for i in range(1, 9)
    )
    cases = {
        "alias bomb in the metadata": (
            prefix,
            _with_info(files, {"metadata: {}": "metadata:\n  " + bomb.replace("\n", "\n  ")}),
            "anchors and aliases",
        ),
        "labels that are not text": (prefix, _with_info(files, {"a: b": "a: [1, 2]"}), "labels are str to str"),
        "a version named latest": (
            f"{name}/latest",
            _with_info(files, {f"version: {version}": "version: latest"}),
            "may not be named 'latest'",
        ),
        "a date in the future": (
            prefix,
            _with_info(files, {"creation_time: ": "creation_time: '2999-01-01T00:00:00+00:00'\nold_time: "}),
            "in the future",
        ),
    }
    for case, (case_prefix, case_files, words) in cases.items():
        archive = write_archive(tmp_path / f"{case.replace(' ', '-')}.raymodel", case_prefix, case_files)
        start = time.monotonic()
        with pytest.raises(StoreError, match=words):
            raystore.models.import_model(str(archive), quiet=True)
        assert time.monotonic() - start < 5, case
        _assert_store_untouched(store_home, [])


def _archive_with_huge_header(path, kind: bytes) -> None:
    """A gzip'd tar whose first member is an extended header (pax or GNU long name) declaring
    256 MiB: 256 KiB on disk."""
    header = tarfile.TarInfo("././@PaxHeader" if kind == tarfile.XHDTYPE else "././@LongLink")
    header.type, header.size = kind, 256 << 20
    with gzip.open(path, "wb", compresslevel=1) as out:
        out.write(header.tobuf(format=tarfile.USTAR_FORMAT))
        zeros = b"0" * (1 << 20)
        for _ in range(256):
            out.write(zeros)


@pytest.mark.parametrize("kind", [tarfile.XHDTYPE, tarfile.GNUTYPE_LONGNAME])
def test_an_oversized_tar_header_is_refused_before_it_is_read(tmp_path, store_home, kind):
    archive = tmp_path / "bomb.raymodel.gz"
    _archive_with_huge_header(archive, kind)
    assert archive.stat().st_size < 2 << 20
    script = (
        "import sys, raystore\n"
        "try:\n"
        "    raystore.models.import_model(sys.argv[1], quiet=True)\n"
        "except raystore.exceptions.StoreError as exc:\n"
        "    print(exc)\n"
        # VmHWM, this program's own peak: ru_maxrss would count the forking pytest's memory too
        "print(next(int(l.split()[1]) for l in open('/proc/self/status') if l.startswith('VmHWM')) // 1024)\n"
    )
    out = subprocess.run(
        [str(VENV_BIN / "python"), "-c", script, str(archive)], capture_output=True, text=True, timeout=120
    )
    message, peak_mib = out.stdout.strip().splitlines()
    assert "extended tar header of 268435456 bytes" in message, out.stderr
    assert int(peak_mib) < 200  # the 256 MiB header was never read (it was, whole, before)
    _assert_store_untouched(store_home, [])


def test_an_archive_declaring_more_than_the_limit_is_refused_before_unpacking(saved, tmp_path, store_home):
    dest = tmp_path / "a.raymodel"
    raystore.models.export_model(saved.tag, str(dest), quiet=True)
    raystore.models.delete(saved.tag)
    with pytest.raises(StoreError, match=r"declares \d+ bytes of files, over the 1000 an import takes"):
        raystore.models.import_model(str(dest), quiet=True, max_size=1000)
    prefix, files = read_archive(dest)
    huge = manifest_for(files).replace(b'"size": %d' % len(files["saved_model.pkl"]), b'"size": %d' % (1 << 50))
    archive = write_archive(tmp_path / "huge.raymodel", prefix, files, manifest=huge)
    with pytest.raises(StoreError, match=r"has only \d+ bytes free"):
        raystore.models.import_model(str(archive), quiet=True, max_size=1 << 60)
    _assert_store_untouched(store_home, [])
    out = subprocess.run(
        [str(VENV_BIN / "raystore"), "models", "import", str(dest), "--max-size", "1K"], capture_output=True, text=True
    )
    assert out.returncode == 1 and "over the 1024 an import takes" in out.stderr
