"""Archives: one model version as a plain tar stream (optionally gzip or zstd), to or from any fsspec URL.

Layout: `<name>/<version>/manifest.json`, then `model.yaml`, then the other files. The manifest comes
first so that an import can check each file as it streams past, without buffering or seeking.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import shutil
import sys
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from raystore._private.store import gc, manifest
from raystore._private.store.fs import is_local, open_filesystem, remote_errors
from raystore._private.store.manifest import FileEntry
from raystore._private.store.model_store import ModelStore, Outcome, VersionWriter
from raystore._private.store.stored_model import StoredModel
from raystore._private.store.transfer import OnBytes
from raystore.exceptions import InvalidArgument, MissingDependency, NotFound, StoreError
from raystore.tag import Tag

SUFFIX = ".raymodel"
COMPRESSIONS = {None: "", "gz": ".gz", "zstd": ".zst"}
_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_IO_BUFFER = 1 << 20
MAX_MANIFEST_BYTES = 16 << 20
MAX_HEADER_BYTES = 1 << 20  # a pax header or GNU long name; real ones are a few hundred bytes
DEFAULT_MAX_SIZE = 200 << 30  # the most an import unpacks unless told otherwise


class _BoundedTarInfo(tarfile.TarInfo):
    """A tar header that refuses an oversized extended header (pax, GNU long name) before it is
    read: tarfile reads one whole, so a 256 KiB gzip holding a 256 MiB pax header cost 800 MB."""

    def _proc_pax(self, tarfile):  # tarfile's own hooks
        self._check_size()
        return super()._proc_pax(tarfile)

    def _proc_gnulong(self, tarfile):
        self._check_size()
        return super()._proc_gnulong(tarfile)

    def _proc_sparse(self, tarfile):
        raise StoreError("a GNU sparse file (whose maps tarfile reads whole); archives hold only regular files")

    def _check_size(self) -> None:
        if self.size > MAX_HEADER_BYTES:
            raise StoreError(
                f"an extended tar header of {self.size} bytes (over {MAX_HEADER_BYTES}); refusing the archive"
            )


def archive_name(tag: Tag, compression: str | None) -> str:
    return f"{tag.name}-{tag.version}{SUFFIX}{COMPRESSIONS[compression]}"


def export_model(
    model: StoredModel,
    dest: str,
    *,
    compression: str | None = None,
    force: bool = False,
    on_bytes: OnBytes | None = None,
) -> str:
    """Stream `model` into an archive at `dest` (a file, a folder, or a URL ending in '/'). Returns its URL.

    An existing archive is replaced only with `force`; a local folder must exist already (a typo
    in a path creates nothing). Files are copied as stored, without re-hashing: the archive
    carries the manifest and every import checks against it (`raystore models verify` checks the
    store itself).
    """
    if compression not in COMPRESSIONS:
        raise InvalidArgument(f"compression must be one of gz, zstd or none, got {compression!r}")
    fs, path = open_filesystem(dest)
    with remote_errors(dest):
        if dest.endswith("/") or fs.isdir(path):
            path = f"{path.rstrip('/')}/{archive_name(model.tag, compression)}"
        _check_destination(fs, path, dest, force)
        with _open_for_write(fs, path) as raw, _compressor(raw, compression) as out:
            write_archive(model, out, kernel_copy=compression is None and is_local(fs), on_bytes=on_bytes)
    return path if is_local(fs) else fs.unstrip_protocol(path)


def write_archive(
    model: StoredModel, out: BinaryIO, *, kernel_copy: bool = False, on_bytes: OnBytes | None = None
) -> None:
    """Write `model` as an uncompressed archive to `out`, any writable binary stream (a file, or
    the pipe of a download); `kernel_copy` only when `out` is a plain local file."""
    listed, base = model.store.snapshot(model.tag)  # files and folder from one manifest reading
    entries = {e.path: e for e in listed}
    manifest_data = manifest.dumps(sorted(entries.values(), key=lambda e: e.path)).encode()
    prefix = f"{model.tag.name}/{model.tag.version}"
    mtime = int(model.info.creation_time.timestamp())
    writer = _TarWriter(out, kernel_copy=kernel_copy)
    writer.add_bytes(f"{prefix}/{manifest.MANIFEST_FILE}", manifest_data, mtime)
    for rel in [manifest.INFO_FILE, *sorted(set(entries) - {manifest.INFO_FILE})]:
        with model.store.open_file(model.tag, rel, base=base) as src:
            writer.add_stream(f"{prefix}/{rel}", src, entries[rel].size, mtime, on_bytes)
    writer.close()


class _TarWriter:
    """A minimal tar writer: headers from `tarfile.TarInfo`, file data copied in large chunks
    (in the kernel when both ends are plain local files), so that export runs near disk speed."""

    def __init__(self, out: BinaryIO, *, kernel_copy: bool):
        self.out, self.written, self.kernel_copy = out, 0, kernel_copy

    def _write(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def _header(self, name: str, size: int, mtime: int) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o644, mtime
        self._write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))

    def _pad(self, size: int) -> None:
        if size % tarfile.BLOCKSIZE:
            self._write(b"\0" * (tarfile.BLOCKSIZE - size % tarfile.BLOCKSIZE))

    def add_bytes(self, name: str, data: bytes, mtime: int) -> None:
        self._header(name, len(data), mtime)
        self._write(data)
        self._pad(len(data))

    def add_stream(self, name: str, src: BinaryIO, size: int, mtime: int, on_bytes: OnBytes | None) -> None:
        self._header(name, size, mtime)
        copied = _copy_in_kernel(src, self.out, size, on_bytes) if self.kernel_copy else 0
        while copied < size:
            chunk = src.read(min(_IO_BUFFER * 4, size - copied))
            if not chunk:
                raise StoreError(f"{name} is shorter than its manifest says; run `raystore models verify`")
            self.out.write(chunk)
            copied += len(chunk)
            if on_bytes:
                on_bytes(len(chunk))
        self.written += size
        self._pad(size)

    def close(self) -> None:
        self._write(b"\0" * (2 * tarfile.BLOCKSIZE))  # end-of-archive marker
        self._pad_record()

    def _pad_record(self) -> None:
        remainder = self.written % tarfile.RECORDSIZE
        if remainder:
            self._write(b"\0" * (tarfile.RECORDSIZE - remainder))


def _copy_in_kernel(src: BinaryIO, dst: BinaryIO, size: int, on_bytes: OnBytes | None) -> int:
    """Copy with os.copy_file_range when both are real local files; return the bytes copied (0 if not)."""
    try:
        src_fd, dst_fd = src.fileno(), dst.fileno()
    except (AttributeError, OSError, io.UnsupportedOperation):
        return 0
    if not hasattr(os, "copy_file_range"):
        return 0
    copied = 0
    try:
        while copied < size:
            n = os.copy_file_range(src_fd, dst_fd, min(size - copied, 64 * _IO_BUFFER))
            if n == 0:
                break
            copied += n
            if on_bytes:
                on_bytes(n)
    except OSError:
        if copied:
            raise
        return 0  # e.g. across filesystems on old kernels: fall back to reading
    return copied


def import_model(
    store: ModelStore,
    src: str,
    *,
    force: bool = False,
    on_bytes: OnBytes | None = None,
    max_size: int = DEFAULT_MAX_SIZE,
) -> tuple[StoredModel, Outcome]:
    """Stream an archive into `store`, checking every file against the manifest before committing.

    Unsafe members (absolute paths, `..`, links, devices), unlisted or missing files, oversized
    headers, a manifest declaring more than `max_size` bytes (or more than a local store has
    free), and corrupt or truncated archives are errors that leave the store unchanged. No file
    unpacks beyond the size its manifest entry declares.
    """
    fs, path = open_filesystem(src)
    with remote_errors(src):
        try:
            kind = fs.info(path).get("type")  # not isfile(): it answers False for any failure
        except FileNotFoundError as exc:
            if "bucket" in str(exc).lower():
                raise  # a missing bucket, which remote_errors explains
            kind = None
        if kind != "file":
            raise NotFound(f"no archive at {src}")
        with fs.open(path, "rb", block_size=_IO_BUFFER * 16) as raw, _decompressor(raw) as stream:
            try:
                # Plain archives are read in place (large direct reads); compressed ones as a stream.
                mode = "r:" if stream is raw else "r|"
                return _import_stream(store, stream, mode, src, force, on_bytes, max_size)
            except StoreError as exc:
                if src in str(exc):
                    raise
                raise StoreError(f"cannot import {src}: {exc}") from None
            except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError, IndexError) as exc:
                raise StoreError(f"{src} is not a valid raystore archive, or it is truncated ({exc})") from None
            except Exception as exc:
                zstandard = sys.modules.get("zstandard")  # loaded if the archive was zstd at all
                if zstandard is not None and isinstance(exc, zstandard.ZstdError):
                    raise StoreError(f"{src} is not a valid zstd stream, or it is truncated ({exc})") from None
                raise


def _import_stream(store, stream, mode, src, force, on_bytes, max_size) -> tuple[StoredModel, Outcome]:
    with tarfile.open(fileobj=stream, mode=mode, bufsize=_IO_BUFFER, tarinfo=_BoundedTarInfo) as tar:
        first = tar.next()
        if first is None:
            raise StoreError(f"{src} is an empty archive")
        tag, entries = _read_manifest(tar, first, src)
        _check_room(store, sum(entry.size for entry in entries), max_size, src)
        prefix = f"{tag.name}/{tag.version}/"

        def fill(writer: VersionWriter) -> None:
            while (member := tar.next()) is not None:  # iterating `tar` would replay the manifest
                rel = _member_path(member, prefix, src)
                if rel is not None:
                    writer.write(rel, tar.extractfile(member), on_bytes)

        return store.put(tag, entries, fill, force=force)


def _check_room(store: ModelStore, declared: int, max_size: int, src: str) -> None:
    """Refuse, before unpacking anything, a version larger than `max_size` or than the free space
    of a local store."""
    if declared > max_size:
        raise StoreError(
            f"{src} declares {declared} bytes of files, over the {max_size} an import takes; "
            "pass a larger max_size (--max-size) if that is what you expect"
        )
    if store.is_local:
        root = store.root
        while not os.path.exists(root):
            root = os.path.dirname(root) or "."
        free = shutil.disk_usage(root).free
        if declared > free:
            raise StoreError(f"{src} declares {declared} bytes of files; {root} has only {free} bytes free")


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


def _check_destination(fs, path: str, dest: str, force: bool) -> None:
    if is_local(fs):
        folder = os.path.dirname(path) or "."
        if not os.path.isdir(folder):
            raise InvalidArgument(f"cannot export to {dest}: the folder {folder} does not exist; create it first")
    if fs.exists(path) and not force:
        where = path if is_local(fs) else fs.unstrip_protocol(path)
        raise InvalidArgument(f"{where} exists already; pass force=True (--force) to overwrite it")


@contextlib.contextmanager
def _open_for_write(fs, path: str) -> Iterator[BinaryIO]:
    """A file that exists at `path` only if everything was written: temp + rename locally,
    a discarded upload remotely."""
    if is_local(fs):
        # What an export killed earlier left beside the same archive goes first.
        gc.sweep(gc.local_staging(Path(path).parent, None, f"{Path(path).name}.part-"))
        tmp = f"{path}.part-{gc.owned_name('export')}"
        try:
            # unbuffered: writes are large, and fd copies must not race a buffer
            with open(tmp, "wb", buffering=0) as f:
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
