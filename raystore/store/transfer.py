"""Moving file contents: streamed in chunks, hashed on the way, checked against the manifest,
several files at a time."""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO, Callable, Iterable

from raystore.exceptions import StoreError
from raystore.store.manifest import CHUNK, FileEntry

OnBytes = Callable[[int], None]
MAX_PARALLEL_FILES = 4


def copy_verified(src: BinaryIO, dst: BinaryIO, expected: FileEntry, on_bytes: OnBytes | None = None) -> None:
    """Copy `src` to `dst` in chunks; raise `StoreError` unless size and sha256 match `expected`."""
    digest = hashlib.sha256()
    size = 0
    while chunk := src.read(CHUNK):
        size += len(chunk)
        if size > expected.size:
            raise StoreError(f"{expected.path}: more than the {expected.size} bytes the manifest lists")
        digest.update(chunk)
        dst.write(chunk)
        if on_bytes:
            on_bytes(len(chunk))
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
