"""`manifest.json`: every file of a version with its size and sha256, and checking files against it.

In a store on object storage the manifest also names the version's generation: the folder
`.g-<generation>/` inside the version's folder that holds its files. A forced replace uploads a
new generation beside the old one and switches by rewriting the manifest, so the old files stay
readable until the new ones are complete. Local stores, and versions written before generations,
keep their files in the version's folder itself (no generation)."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from raystore.exceptions import StoreError

MANIFEST_FILE = "manifest.json"
INFO_FILE = "model.yaml"
CHUNK = 1 << 20
GENERATION_PREFIX = ".g-"
_GENERATION_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative, with '/' separators
    size: int
    sha256: str


def sha256_of(stream: BinaryIO) -> tuple[int, str]:
    """Size and hex sha256 of a stream, read in chunks so memory stays flat."""
    digest = hashlib.sha256()
    size = 0
    while chunk := stream.read(CHUNK):
        digest.update(chunk)
        size += len(chunk)
    return size, digest.hexdigest()


def scan_dir(root: Path, extra: Iterable[tuple[str, bytes]] = ()) -> list[FileEntry]:
    """Entries for every regular file under `root` (but the manifest), plus in-memory `extra` files."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in sorted(filenames):
            full = Path(dirpath, filename)
            rel = full.relative_to(root).as_posix()
            if rel == MANIFEST_FILE:
                continue
            check_relpath(rel, str(root))
            if full.is_symlink() or not full.is_file():
                raise StoreError(f"{full} is not a regular file; a model version may hold only regular files")
            with open(full, "rb") as f:
                size, digest = sha256_of(f)
            entries.append(FileEntry(rel, size, digest))
    for rel, data in extra:
        entries.append(FileEntry(rel, len(data), hashlib.sha256(data).hexdigest()))
    return sorted(entries, key=lambda e: e.path)


def same_files(a: Iterable[FileEntry], b: Iterable[FileEntry]) -> bool:
    """Whether two manifests list the same files, with the same sizes and hashes, in any order."""
    return sorted(a, key=lambda e: e.path) == sorted(b, key=lambda e: e.path)


def dumps(entries: list[FileEntry], generation: str | None = None) -> str:
    document: dict = {"files": [{"path": e.path, "size": e.size, "sha256": e.sha256} for e in entries]}
    if generation is not None:
        document["generation"] = generation
    return json.dumps(document, indent=1)


def generation_of(text: str | bytes, where: str) -> str | None:
    """The generation a manifest names (None: the files are in the version's folder itself)."""
    try:
        generation = json.loads(text).get("generation")
    except (ValueError, AttributeError) as exc:
        raise StoreError(f"{where} is corrupt ({exc}); delete or re-import that version") from None
    if generation is not None and not (isinstance(generation, str) and _GENERATION_RE.fullmatch(generation)):
        raise StoreError(f"{where} is corrupt: bad generation {generation!r}")
    return generation


def loads(text: str | bytes, where: str) -> list[FileEntry]:
    try:
        data = json.loads(text)
        entries = [FileEntry(str(f["path"]), int(f["size"]), str(f["sha256"])) for f in data["files"]]
    except (ValueError, KeyError, TypeError) as exc:
        raise StoreError(f"{where} is corrupt ({exc}); delete or re-import that version") from None
    for entry in entries:
        check_relpath(entry.path, where)
        if entry.size < 0 or len(entry.sha256) != 64:
            raise StoreError(f"{where} is corrupt: bad size or sha256 for {entry.path!r}")
    if len({e.path for e in entries}) != len(entries):
        raise StoreError(f"{where} lists a file twice")
    if INFO_FILE not in {e.path for e in entries}:
        raise StoreError(f"{where} does not list {INFO_FILE}")
    return entries


def check_relpath(path: str, where: str) -> str:
    """Refuse paths that could escape a version folder: absolute, `..`, backslashes, empty parts."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or "\\" in path
        or "\0" in path
        or any(part in ("", ".", "..") for part in parts)
        or path == MANIFEST_FILE
        or parts[0].startswith(GENERATION_PREFIX)  # a store's generation folders
    ):
        raise StoreError(f"{where}: unsafe or reserved file path {path!r}")
    return path
