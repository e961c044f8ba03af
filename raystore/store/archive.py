"""Archives: one model version as a plain tar stream (optionally gzip or zstd), to or from any fsspec URL.

Layout: `<name>/<version>/manifest.json`, then `model.yaml`, then the other files. The manifest comes
first so that an import can check each file as it streams past, without buffering or seeking.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import gzip
import os
import tarfile
import uuid
import zlib
from typing import BinaryIO, Iterator

from raystore.exceptions import InvalidArgument, MissingDependency, NotFound, StoreError
from raystore.store import manifest
from raystore.store.fs import is_local, open_filesystem, remote_errors
from raystore.store.manifest import FileEntry
from raystore.store.model import Model
from raystore.store.model_store import ModelStore
from raystore.store.remote import Outcome
from raystore.store.transfer import OnBytes
from raystore.tag import Tag

SUFFIX = ".raymodel"
COMPRESSIONS = {None: "", "gz": ".gz", "zstd": ".zst"}
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_IO_BUFFER = 1 << 20
MAX_MANIFEST_BYTES = 16 << 20


class _VerifyingReader:
    """Reads a stored file for the archive, hashing it, so that a corrupt store is not exported."""

    def __init__(self, src: BinaryIO, entry: FileEntry, on_bytes: OnBytes | None):
        self.src, self.entry, self.on_bytes = src, entry, on_bytes
        self.digest, self.size = hashlib.sha256(), 0

    def read(self, n: int = -1) -> bytes:
        chunk = self.src.read(n)
        self.digest.update(chunk)
        self.size += len(chunk)
        if self.on_bytes and chunk:
            self.on_bytes(len(chunk))
        return chunk

    def check(self) -> None:
        if self.size != self.entry.size or self.digest.hexdigest() != self.entry.sha256:
            raise StoreError(
                f"{self.entry.path} does not match its manifest in the store; run `raystore models verify`"
            )


def archive_name(tag: Tag, compression: str | None) -> str:
    return f"{tag.name}-{tag.version}{SUFFIX}{COMPRESSIONS[compression]}"


def export_model(
    model: Model, dest: str, *, compression: str | None = None, on_bytes: OnBytes | None = None
) -> str:
    """Stream `model` into an archive at `dest` (a file, a folder, or a URL ending in '/'). Returns its URL."""
    if compression not in COMPRESSIONS:
        raise InvalidArgument(f"compression must be one of gz, zstd or none, got {compression!r}")
    fs, path = open_filesystem(dest)
    with remote_errors(dest):
        if dest.endswith("/") or fs.isdir(path):
            path = f"{path.rstrip('/')}/{archive_name(model.tag, compression)}"
        entries = {e.path: e for e in model.manifest}
        order = [manifest.MANIFEST_FILE, manifest.INFO_FILE] + sorted(set(entries) - {manifest.INFO_FILE})
        prefix = f"{model.tag.name}/{model.tag.version}"
        manifest_data = manifest.dumps(sorted(entries.values(), key=lambda e: e.path)).encode()
        with _open_for_write(fs, path) as raw, _compressor(raw, compression) as out:
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=_IO_BUFFER) as tar:
                for rel in order:
                    member = tarfile.TarInfo(f"{prefix}/{rel}")
                    member.mode, member.mtime = 0o644, int(model.info.creation_time.timestamp())
                    if rel == manifest.MANIFEST_FILE:
                        member.size = len(manifest_data)
                        tar.addfile(member, io.BytesIO(manifest_data))
                        continue
                    member.size = entries[rel].size
                    with model.store.open_file(model.tag, rel) as src:
                        reader = _VerifyingReader(src, entries[rel], on_bytes)
                        tar.addfile(member, reader)
                        reader.check()
    return path if is_local(fs) else fs.unstrip_protocol(path)


def import_model(
    store: ModelStore, src: str, *, force: bool = False, on_bytes: OnBytes | None = None
) -> tuple[Model, Outcome]:
    """Stream an archive into `store`, checking every file against the manifest before committing.

    Unsafe members (absolute paths, `..`, links, devices), unlisted or missing files, and corrupt or
    truncated archives are errors that leave the store unchanged.
    """
    fs, path = open_filesystem(src)
    with remote_errors(src):
        if not fs.isfile(path):
            raise NotFound(f"no archive at {src}")
        with fs.open(path, "rb", block_size=_IO_BUFFER * 16) as raw, _decompressor(raw) as stream:
            try:
                return _import_stream(store, stream, src, force, on_bytes)
            except StoreError as exc:
                if src in str(exc):
                    raise
                raise StoreError(f"cannot import {src}: {exc}") from None
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
                raise StoreError(f"{src} is not a valid raystore archive, or it is truncated ({exc})") from None
            except Exception as exc:
                if type(exc).__name__ == "ZstdError":
                    raise StoreError(f"{src} is not a valid zstd stream, or it is truncated ({exc})") from None
                raise


def _import_stream(store, stream, src, force, on_bytes) -> tuple[Model, Outcome]:
    with tarfile.open(fileobj=stream, mode="r|", bufsize=_IO_BUFFER) as tar:
        first = tar.next()
        if first is None:
            raise StoreError(f"{src} is an empty archive")
        tag, entries = _read_manifest(tar, first, src)
        presence = store.presence(tag, entries)
        if presence == "identical":
            return store.get(tag), "identical"
        if presence == "different" and not force:
            raise StoreError(
                f"model {tag} already exists in {store.url} with different content; use --force (force=True) to replace it"
            )
        prefix = f"{tag.name}/{tag.version}/"
        writer = store.writer(tag, entries, force=force)
        try:
            while (member := tar.next()) is not None:  # iterating `tar` would replay the manifest
                rel = _member_path(member, prefix, src)
                if rel is None:
                    continue
                writer.write(rel, tar.extractfile(member), on_bytes)
            return writer.commit(), "copied"
        except BaseException:
            writer.abort()
            raise


def _read_manifest(tar: tarfile.TarFile, member: tarfile.TarInfo, src: str) -> tuple[Tag, list[FileEntry]]:
    parts = member.name.split("/")
    if len(parts) != 3 or parts[2] != manifest.MANIFEST_FILE or not member.isreg():
        raise StoreError(
            f"{src} is not a raystore archive: it must start with <name>/<version>/manifest.json, not {member.name!r}"
        )
    tag = Tag(parts[0], parts[1])
    if member.size > MAX_MANIFEST_BYTES:
        raise StoreError(f"{src}: the manifest is {member.size} bytes; refusing one over {MAX_MANIFEST_BYTES}")
    return tag, manifest.loads(tar.extractfile(member).read(), f"{src}:{member.name}")


def _member_path(member: tarfile.TarInfo, prefix: str, src: str) -> str | None:
    """The version-relative path of a safe regular file; None for a plain folder entry; else an error."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/") or "\\" in name:
        raise StoreError(f"{src}: unsafe member path {name!r} (absolute or containing '..'); refusing the archive")
    if member.isdir():
        folder = name.rstrip("/") + "/"
        if not (prefix.startswith(folder) or folder.startswith(prefix)):
            raise StoreError(f"{src}: unexpected folder {name!r} outside {prefix}")
        return None
    if not member.isreg():
        kind = "link" if (member.issym() or member.islnk()) else "device or special file"
        raise StoreError(f"{src}: member {name!r} is a {kind}; archives may hold only regular files")
    if not name.startswith(prefix):
        raise StoreError(f"{src}: member {name!r} is outside {prefix}")
    return manifest.check_relpath(name[len(prefix) :], src)


@contextlib.contextmanager
def _open_for_write(fs, path: str) -> Iterator[BinaryIO]:
    """A file that exists at `path` only if everything was written: temp + rename locally,
    a discarded upload remotely."""
    if is_local(fs):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tmp = f"{path}.part-{uuid.uuid4().hex[:8]}"
        try:
            with open(tmp, "wb", buffering=_IO_BUFFER) as f:
                yield f
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(tmp)
        return
    f = fs.open(path, "wb")
    try:
        yield f
    except BaseException:
        if hasattr(f, "discard"):
            f.discard()  # abort the multipart upload: no partial object appears
        else:
            f.close()
            with contextlib.suppress(Exception):
                fs.rm(path)
        raise
    f.close()


@contextlib.contextmanager
def _compressor(raw: BinaryIO, compression: str | None) -> Iterator[BinaryIO]:
    if compression is None:
        yield raw
    elif compression == "gz":
        with gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1) as out:  # weights barely compress
            yield out
    else:
        zstandard = _zstandard()
        with zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=False) as out:
            yield out


@contextlib.contextmanager
def _decompressor(raw: BinaryIO) -> Iterator[BinaryIO]:
    magic = raw.read(4)
    raw.seek(0)
    if magic.startswith(_GZIP_MAGIC):
        with gzip.GzipFile(fileobj=raw, mode="rb") as stream:
            yield stream
    elif magic == _ZSTD_MAGIC:
        with _zstandard().ZstdDecompressor().stream_reader(raw, closefd=False) as stream:
            yield stream
    else:
        yield raw


def _zstandard():
    try:
        import zstandard
    except ImportError:
        raise MissingDependency("zstd archives need the zstandard package: pip install zstandard") from None
    return zstandard
