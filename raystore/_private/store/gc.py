"""Leftovers of interrupted work, found and removed: staging folders of processes that died,
version folders that never committed, generations a replace left behind, and incomplete S3
multipart uploads.

Nothing here is visible to readers (a version is what its manifest names), so leftovers cost
space, never correctness; a sweep that guesses wrong could, so it never takes a live process's
staging, an object without a date, or a generation a manifest names (checked again right before
each removal). Each write sweeps what it can cheaply (its own staging area, its
own version's folder); `raystore models gc` sweeps a whole store.
"""

from __future__ import annotations

import datetime
import functools
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raystore._private.store import manifest
from raystore._private.store.fs import remote_errors
from raystore.exceptions import StoreError
from raystore.tag import Tag

if TYPE_CHECKING:
    from raystore._private.store.model_store import ModelStore

STALE_SECONDS = 24 * 3600  # what a write sweeps on its own, whoever left it
LOCAL_TEMP_PREFIX = "raystore-"  # staging of writes to remote stores, in the system's temp folder


@dataclass(frozen=True)
class Leftover:
    what: str  # what it is, in words
    where: str  # a path or URL
    size: int  # bytes, as far as known
    remove: Any  # () -> None


# ---- who owns a staging folder ----------------------------------------------------------------


@functools.cache  # asked for every staging folder a sweep looks at; a process never moves
def _host() -> str:
    """This host, and this PID namespace (containers sharing a hostname do not share pids)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        namespace = 0
    return f"{socket.gethostname().replace('-', '_') or 'host'}_{namespace}"


def owned_name(kind: str) -> str:
    """A staging folder's name that says which process made it: `KIND-HOST-PID-RANDOM`."""
    return f"{kind}-{_host()}-{os.getpid()}-{uuid.uuid4().hex}"


def owner(name: str) -> str:
    """'dead', 'alive' or 'unknown' (another host or namespace, or not one of our names): the
    process that made staging folder `name` (see `owned_name`)."""
    parts = name.rsplit("-", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return "unknown"
    if parts[1] != _host():
        return "unknown"
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return "dead"
    except PermissionError:
        return "alive"  # someone else's live process
    return "alive"


def _age_s(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def local_staging(folder: Path, older_than_s: float | None, prefix: str = "") -> list[Leftover]:
    """Entries of a staging folder (named by `owned_name`, after `prefix`) whose process died, or,
    when it cannot be told, that nobody touched for `older_than_s` (None: only those of dead
    processes). A live process's staging is never taken, however old."""
    found = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            who = owner(entry.name[len(prefix) :])
            old = older_than_s is not None and who == "unknown" and _age_s(entry) >= older_than_s
            if who == "dead" or old:
                why = "staging of a process that died" if who == "dead" else "old staging"
                found.append(Leftover(why, str(entry), _folder_size(entry), _remover(entry)))
        except FileNotFoundError:
            continue  # removed meanwhile
    return found


def _remover(path: Path):
    def remove() -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    return remove


def local_temp_folder(kind: str) -> Path:
    """A new staging folder in the system's temp folder (for writes to remote stores), after
    removing those of processes that died."""
    sweep(local_temp_leftovers())
    path = Path(tempfile.gettempdir()) / (LOCAL_TEMP_PREFIX + owned_name(kind))
    path.mkdir(mode=0o700)
    return path


def local_temp_leftovers() -> list[Leftover]:
    """Staging copies that writes to remote stores left in the system's temp folder, by
    processes of this host that died (a live one's may take as long as it needs)."""
    return local_staging(Path(tempfile.gettempdir()), None, LOCAL_TEMP_PREFIX)


def sweep(leftovers: Iterable[Leftover]) -> None:
    for leftover in leftovers:
        try:
            leftover.remove()
        except Exception:  # best effort: the next sweep tries again
            pass


# ---- object storage ---------------------------------------------------------------------------


def _modified_age_s(info: dict[str, Any]) -> float:
    when = info.get("LastModified") or info.get("mtime") or info.get("last_modified")
    if isinstance(when, datetime.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        return (datetime.datetime.now(datetime.UTC) - when).total_seconds()
    if isinstance(when, (int, float)):
        return time.time() - when
    return 0.0  # no date: young, as far as anyone can tell (never swept on a guess)


def version_leftovers(store: ModelStore, tag: Tag, older_than_s: float, keep: str | None = None) -> list[Leftover]:
    """The generation folders of one version that its manifest does not name (those of replaced
    or interrupted writes), untouched for `older_than_s` (a write in progress keeps writing).
    `manifest.json` and `model.yaml` are never leftovers; `keep` is a generation to spare (the
    caller's own). Each removal checks the manifest again first."""
    fs = store.fs
    folder = store._version_dir(tag)
    with remote_errors(store.url):
        fs.invalidate_cache(folder)  # what another process wrote or removed since we last looked
        try:
            found_objects: dict[str, dict] = fs.find(folder, detail=True)
        except FileNotFoundError:
            return []
    named = _named_generation(store, tag)
    in_use = {keep, named}
    groups: dict[str, list[dict]] = {}
    old_layout: dict[str, dict] = {}  # files beside model.yaml, left by a replace of an older layout
    for path, info in found_objects.items():
        if info.get("type") == "directory":
            continue
        child = path[len(folder) + 1 :].split("/", 1)[0]
        if child.startswith(manifest.GENERATION_PREFIX):
            if child[len(manifest.GENERATION_PREFIX) :] not in in_use:
                groups.setdefault(child[len(manifest.GENERATION_PREFIX) :], []).append(info)
        elif named is not None and child not in (manifest.MANIFEST_FILE, manifest.INFO_FILE):
            old_layout[path] = info
    found = []
    if old_layout and min(_modified_age_s(i) for i in old_layout.values()) >= older_than_s:

        def remove_old_layout(paths: list[str] = sorted(old_layout)) -> None:
            if _named_generation(store, tag) is None:
                return  # the version went back to the older layout since we looked
            with remote_errors(store.url):
                fs.rm(paths)

        size = sum(int(i.get("size") or 0) for i in old_layout.values())
        what = "files of a replaced write (the layout before generations)"
        found.append(Leftover(what, fs.unstrip_protocol(folder), size, remove_old_layout))
    for generation, infos in groups.items():
        if min(_modified_age_s(i) for i in infos) < older_than_s:
            continue
        where = store._generation_dir(tag, generation)

        def remove(where: str = where, generation: str = generation) -> None:
            if _named_generation(store, tag) == generation:
                return  # a write switched the version to it since we looked
            with remote_errors(store.url):
                fs.invalidate_cache(where)
                fs.rm(where, recursive=True)

        size = sum(int(i.get("size") or 0) for i in infos)
        found.append(Leftover("files of a replaced or interrupted write", fs.unstrip_protocol(where), size, remove))
    return found


def _named_generation(store: ModelStore, tag: Tag) -> str | None:
    """The generation the version's manifest names, committed or not (a manifest written just
    before its model.yaml names the version's files too)."""
    where = f"{store._version_dir(tag)}/{manifest.MANIFEST_FILE}"
    data = store._cat(where)
    if data is None:
        return None
    try:
        return manifest.generation_of(data, where)
    except StoreError:
        return None


def multipart_leftovers(store: ModelStore, prefix: str, older_than_s: float) -> list[Leftover]:
    """Incomplete S3 multipart uploads under `prefix` (a folder of a store on S3, ending in '/'),
    started `older_than_s` ago or more: the parts of a killed upload, kept (and billed) until
    someone aborts them."""
    protocols = store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)
    if "s3" not in protocols:
        return []
    bucket, _, key_prefix = prefix.partition("/")
    found = []
    markers: dict[str, str] = {}
    while True:  # a page holds at most 1000 uploads
        with remote_errors(store.url):
            listing = store.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key_prefix, **markers)
        for upload in listing.get("Uploads", []):
            if _modified_age_s({"LastModified": upload.get("Initiated")}) < older_than_s:
                continue
            key, upload_id = upload["Key"], upload["UploadId"]

            def remove(key: str = key, upload_id: str = upload_id) -> None:
                with remote_errors(store.url):
                    store.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

            found.append(Leftover("an incomplete multipart upload", f"s3://{bucket}/{key}", 0, remove))
        if not listing.get("IsTruncated"):
            return found
        markers = {"KeyMarker": listing["NextKeyMarker"], "UploadIdMarker": listing["NextUploadIdMarker"]}


def store_leftovers(store: ModelStore, older_than_s: float) -> list[Leftover]:
    """Everything `raystore models gc` would remove from `store`."""
    if store.is_local:
        return local_staging(store._tmp_root(), older_than_s)
    found = []
    for name in store.names():
        for version in store._version_names(name):
            found += version_leftovers(store, Tag(name, version), older_than_s)
    found += multipart_leftovers(store, f"{store.root.rstrip('/')}/models/", older_than_s)  # ours only
    return found
