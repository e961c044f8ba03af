"""Leftovers of interrupted work, found and removed: staging folders of processes that died,
version folders that never committed, generations a replace left behind, and incomplete S3
multipart uploads.

Nothing here is visible to readers (a version exists only with its `model.yaml`), so leftovers
cost space, never correctness. Each write sweeps what it can cheaply (its own staging area, its
own version's folder); `raystore models gc` sweeps a whole store.
"""

from __future__ import annotations

import datetime
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


def owned_name(kind: str) -> str:
    """A staging folder's name that says which process made it: `KIND-HOST-PID-RANDOM`."""
    host = socket.gethostname().replace("-", "_") or "host"
    return f"{kind}-{host}-{os.getpid()}-{uuid.uuid4().hex}"


def owner_is_dead(name: str) -> bool:
    """Whether the process that made staging folder `name` (see `owned_name`) is known to be
    gone: it ran on this host and no process has its pid. Unknown owners count as alive."""
    parts = name.rsplit("-", 3)
    if len(parts) != 4 or not parts[2].isdigit():
        return False
    host, pid = parts[1], int(parts[2])
    if host != (socket.gethostname().replace("-", "_") or "host"):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # someone else's live process
    return False


def _age_s(path: Path) -> float:
    return time.time() - path.stat().st_mtime


def _folder_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def local_staging(folder: Path, older_than_s: float | None, prefix: str = "") -> list[Leftover]:
    """Entries of a staging folder (named by `owned_name`, after `prefix`) whose process died, or
    that nobody touched for `older_than_s` (None: only those of dead processes)."""
    found = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return []
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        try:
            dead = owner_is_dead(entry.name[len(prefix) :])
            if dead or (older_than_s is not None and _age_s(entry) >= older_than_s):
                why = "staging of a process that died" if dead else "old staging"
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
    return float("inf")  # no date: old as far as anyone can tell


def version_leftovers(store: ModelStore, tag: Tag, older_than_s: float, keep: str | None = None) -> list[Leftover]:
    """In one version's folder: everything, when the version never committed; else the
    generations it does not use. Only what nobody wrote to for `older_than_s` (a write in
    progress keeps writing). `keep` is a generation to spare (the caller's own)."""
    fs = store.fs
    folder = store._version_dir(tag)
    with remote_errors(store.url):
        fs.invalidate_cache(folder)  # what another process wrote or removed since we last looked
        try:
            found_objects: dict[str, dict] = fs.find(folder, detail=True)
        except FileNotFoundError:
            return []
    objects = {path: info for path, info in found_objects.items() if info.get("type") != "directory"}
    if not objects:
        return []
    try:
        committed = store._committed(tag)
    except StoreError:
        return []  # a corrupt version is for `verify` and `delete`, not for the sweeper
    groups: dict[str, list[dict]] = {}
    if committed is None:
        groups[folder] = list(objects.values())
        what = "an interrupted write (never committed)"
    else:
        in_use = {committed[1], keep}
        for path, info in objects.items():
            child = path[len(folder) + 1 :].split("/", 1)[0]
            generation = child[len(manifest.GENERATION_PREFIX) :]
            if child.startswith(manifest.GENERATION_PREFIX) and generation not in in_use:
                groups.setdefault(f"{folder}/{child}", []).append(info)
        what = "files of a replaced or interrupted write"
    found = []
    for where, infos in groups.items():
        if infos and min(_modified_age_s(i) for i in infos) >= older_than_s:
            size = sum(int(i.get("size") or 0) for i in infos)

            def remove(where: str = where) -> None:
                with remote_errors(store.url):
                    fs.invalidate_cache(where)
                    fs.rm(where, recursive=True)

            found.append(Leftover(what, fs.unstrip_protocol(where), size, remove))
    return found


def multipart_leftovers(store: ModelStore, prefix: str, older_than_s: float) -> list[Leftover]:
    """Incomplete S3 multipart uploads under `prefix` (of a store on S3), started `older_than_s`
    ago or more: the parts of a killed upload, kept (and billed) until someone aborts them."""
    if "s3" not in (store.fs.protocol if isinstance(store.fs.protocol, tuple) else (store.fs.protocol,)):
        return []
    bucket, _, key_prefix = prefix.partition("/")
    with remote_errors(store.url):
        listing = store.fs.call_s3("list_multipart_uploads", Bucket=bucket, Prefix=key_prefix)
    found = []
    for upload in listing.get("Uploads", []):
        if _modified_age_s({"LastModified": upload.get("Initiated")}) < older_than_s:
            continue
        key, upload_id = upload["Key"], upload["UploadId"]

        def remove(key: str = key, upload_id: str = upload_id) -> None:
            with remote_errors(store.url):
                store.fs.call_s3("abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id)

        found.append(Leftover("an incomplete multipart upload", f"s3://{bucket}/{key}", 0, remove))
    return found


def store_leftovers(store: ModelStore, older_than_s: float) -> list[Leftover]:
    """Everything `raystore models gc` would remove from `store`."""
    if store.is_local:
        return local_staging(store._tmp_root(), older_than_s)
    found = []
    for name in store.names():
        for version in store._version_names(name):
            found += version_leftovers(store, Tag(name, version), older_than_s)
    found += multipart_leftovers(store, store.root, older_than_s)
    return found
