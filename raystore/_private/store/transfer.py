"""Moving file contents: streamed in chunks, hashed on the way, checked against the manifest,
several files at a time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from raystore._private.store.manifest import CHUNK, FileEntry
from raystore.exceptions import StoreError

OnBytes = Callable[[int], None]
MAX_PARALLEL_FILES = 4


PIPELINE_CHUNK = 4 * 1024 * 1024


def copy_verified(src: BinaryIO, dst: BinaryIO, expected: FileEntry, on_bytes: OnBytes | None = None) -> None:
    """Copy `src` to `dst` in chunks; raise `StoreError` unless size and sha256 match `expected`.

    For large files hashing runs on a helper thread while the next chunk is read and this one
    written (hashlib releases the GIL), so they cost about max(hash, copy) rather than the sum.
    """
    digest = hashlib.sha256()
    size = 0
    if expected.size > PIPELINE_CHUNK:
        hasher = ThreadPoolExecutor(max_workers=1)
        update = lambda chunk: hasher.submit(digest.update, chunk)
        chunk_size = PIPELINE_CHUNK
    else:
        hasher, update, chunk_size = None, digest.update, CHUNK
    pending = None
    try:
        while chunk := src.read(chunk_size):
            size += len(chunk)
            if size > expected.size:
                raise StoreError(f"{expected.path}: more than the {expected.size} bytes the manifest lists")
            if pending is not None:
                pending.result()  # chunks stay in order; at most two are in memory
            pending = update(chunk)
            dst.write(chunk)
            if on_bytes:
                on_bytes(len(chunk))
        if pending is not None:
            pending.result()
    finally:
        if hasher is not None:
            hasher.shutdown(wait=True)
    if size != expected.size:
        raise StoreError(f"{expected.path}: {size} bytes, the manifest lists {expected.size} (truncated?)")
    if digest.hexdigest() != expected.sha256:
        raise StoreError(f"{expected.path}: sha256 differs from the manifest (corrupt data)")


def run_parallel(tasks: Iterable[Callable[[], None]], max_workers: int = MAX_PARALLEL_FILES) -> None:
    """Run `tasks` on a few threads (I/O and hashlib release the GIL); re-raise the first failure."""
    tasks = list(tasks)
    if len(tasks) <= 1 or max_workers <= 1:
        for task in tasks:
            task()
        return
    with ThreadPoolExecutor(max_workers=min(max_workers, len(tasks), (os.cpu_count() or 2) * 2)) as pool:
        futures = [pool.submit(task) for task in tasks]
        try:
            for future in futures:
                future.result()
        except BaseException:
            for future in futures:
                future.cancel()  # do not start what is left; running ones finish
            raise


class RangeReader:
    """Reads a remote file as consecutive range requests with a few in flight, so that one large
    file downloads over several connections while memory stays at `depth + 1` chunks."""

    def __init__(self, fs, path: str, size: int, chunk: int = 8 * 1024 * 1024, depth: int = 3):
        self.fs, self.path, self.size, self.chunk = fs, path, size, chunk
        self._pool = ThreadPoolExecutor(max_workers=depth)
        self._next_offset = 0
        self._inflight: list = []
        self._buffer = memoryview(b"")
        for _ in range(depth):
            self._schedule()

    def _schedule(self) -> None:
        if self._next_offset < self.size:
            start, end = self._next_offset, min(self._next_offset + self.chunk, self.size)
            self._inflight.append(self._pool.submit(self.fs.cat_file, self.path, start=start, end=end))
            self._next_offset = end

    def read(self, n: int = -1) -> bytes:
        if not self._buffer:
            if not self._inflight:
                return b""
            data = self._inflight.pop(0).result()
            self._schedule()
            self._buffer = memoryview(data)
        if n < 0 or n >= len(self._buffer):
            out, self._buffer = self._buffer, memoryview(b"")
        else:
            out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out.tobytes() if len(out) != len(out.obj) else out.obj

    def close(self) -> None:
        for future in self._inflight:
            future.cancel()
        self._pool.shutdown(wait=True)
        self._inflight.clear()

    def __enter__(self) -> RangeReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
