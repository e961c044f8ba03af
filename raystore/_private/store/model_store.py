"""`ModelStore`: committed model versions in folders `<root>/models/<name>/<version>/` on any fsspec filesystem.

Rules that keep every reader safe without locks:
- a version exists when its folder holds `model.yaml`, written last (locally the whole folder is
  built under `<root>/.tmp/` and renamed into place in one step; remotely every other file is
  uploaded first, into a generation folder of the writer's own, which the manifest then names);
- a forced replace never hides the version it replaces: locally the new folder is swapped in with
  one atomic rename; remotely the new generation is complete before the manifest switches to it,
  and the old generation stays for readers still copying it until a sweep an hour later;
- deleting removes `model.yaml` first (locally: renames the folder away), then the files;
- `latest` is computed from committed versions every time, never stored.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import hashlib
import io
import logging
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Literal

from raystore._private.store import gc, manifest
from raystore._private.store.aliases import Aliases
from raystore._private.store.cache import NodeCache
from raystore._private.store.fs import create_exclusive, is_local, open_filesystem, remote_errors
from raystore._private.store.info import ModelInfo
from raystore._private.store.manifest import FileEntry
from raystore._private.store.stored_model import StoredModel
from raystore._private.store.transfer import OnBytes, RangeReader, copy_verified, run_parallel
from raystore.config import settings
from raystore.exceptions import AmbiguousTag, InvalidArgument, InvalidTag, NotFound, StoreError
from raystore.tag import LATEST, Tag, validate_part, validate_version

logger = logging.getLogger("raystore.store")

MODELS_DIR = "models"
TMP_DIR = ".tmp"
MAX_INFO_BYTES = 1 << 20  # model.yaml is small; a huge one is a hostile archive
RANGE_READ_MIN = 32 * 1024 * 1024  # smaller files come in one request
# A remote write removes what earlier, interrupted writes of its version left once nobody has
# written to it for this long (a write in progress keeps writing), and their multipart uploads
# (whose parts show no progress from outside) after longer.
SWEEP_AFTER_S = 3600
SWEEP_UPLOADS_AFTER_S = 6 * 3600
# `latest` is the newest creation time: a version dated later than this is refused on arrival.
MAX_CLOCK_SKEW = datetime.timedelta(hours=1)

Presence = Literal["absent", "identical", "different"]
Outcome = Literal["copied", "identical"]  # what putting a version into a store did


class ModelStore:
    def __init__(self, root: str | os.PathLike):
        self.url = str(root)
        self.fs, self.root = open_filesystem(self.url)
        self.is_local = is_local(self.fs)
        self.aliases = Aliases(self)

    def __repr__(self) -> str:
        return f"ModelStore({self.url!r})"

    # ---- locations -------------------------------------------------------------------------

    def _join(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def _version_dir(self, tag: Tag) -> str:
        return self._join(MODELS_DIR, tag.name, tag.version)

    def location_of(self, tag: Tag) -> str:
        path = self._version_dir(tag)
        return path if self.is_local else self.fs.unstrip_protocol(path)

    def local_copy(self, tag: Tag) -> Path:
        """A local folder with the version's files: the folder itself, or the node cache's copy."""
        if self.is_local:
            return Path(self._version_dir(tag))
        return NodeCache.default().fetch(self, tag)[0]

    def files_dir(self, tag: Tag) -> str:
        """The folder that holds the files of a committed version: its own folder, or (on object
        storage) the generation folder its manifest names."""
        return self._version_dir(tag) if self.is_local else self.snapshot(tag)[1]

    def _generation_dir(self, tag: Tag, generation: str | None) -> str:
        base = self._version_dir(tag)
        return base if generation is None else f"{base}/{manifest.GENERATION_PREFIX}{generation}"

    def _committed(self, tag: Tag) -> tuple[list[FileEntry], str | None] | None:
        """A committed version's manifest entries and generation, or None when it is not committed."""
        if self._cat(self._join(MODELS_DIR, tag.name, tag.version, manifest.INFO_FILE)) is None:
            return None
        where = self._join(MODELS_DIR, tag.name, tag.version, manifest.MANIFEST_FILE)
        data = self._cat(where)
        if data is None:
            raise StoreError(f"{where} is missing; delete or re-import that version")
        return manifest.loads(data, where), manifest.generation_of(data, where)

    def snapshot(self, tag: Tag) -> tuple[list[FileEntry], str]:
        """A committed version's files and the folder that holds them, from one reading of its
        manifest: what a reader copies, consistent even if a replace lands meanwhile."""
        committed = self._committed(tag)
        if committed is None:
            raise NotFound(f"model {tag} was deleted, or its manifest is missing, in {self.url}")
        return committed[0], self._generation_dir(tag, committed[1])

    def open_file(self, tag: Tag, relpath: str, size: int | None = None, *, base: str | None = None) -> BinaryIO:
        """A reader for one file of a version (in `base`, its `files_dir`, when the caller knows it);
        large remote files are fetched with parallel ranges."""
        path = f"{base or self.files_dir(tag)}/{relpath}"
        if not self.is_local and size is not None and size > RANGE_READ_MIN:
            return RangeReader(self.fs, path, size)
        try:
            return self.fs.open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"model {tag} was deleted or replaced while being read ({relpath}); try again") from None

    # ---- reading ---------------------------------------------------------------------------

    def _ls_names(self, path: str) -> list[str]:
        try:
            with remote_errors(self.url):
                # refresh: never answer from a listing cached before another process committed
                return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False, refresh=True)]
        except FileNotFoundError:
            return []

    def _cat(self, path: str) -> bytes | None:
        try:
            with remote_errors(self.url):
                return self.fs.cat_file(path)
        except (FileNotFoundError, NotADirectoryError):
            return None

    def _read_info(self, name: str, version: str) -> ModelInfo | None:
        where = self._join(MODELS_DIR, name, version, manifest.INFO_FILE)
        text = self._cat(where)
        if text is None:
            return None  # not committed, or deleted since it was listed
        if not self.is_local:
            text, where = self._current_info(name, version, text, where)
        info = ModelInfo.from_yaml(text.decode("utf-8", errors="replace"), where)
        if (info.name, info.version) != (name, version):
            raise StoreError(f"{where} describes {info.tag}, not {name}:{version}; the store was edited by hand")
        return info

    def _current_info(self, name: str, version: str, text: bytes, where: str) -> tuple[bytes, str]:
        """On object storage the manifest decides which generation a version is: when the
        `model.yaml` beside it is another generation's (a replace caught between its two writes,
        or two racing), the generation's own copy is the version's info."""
        manifest_where = self._join(MODELS_DIR, name, version, manifest.MANIFEST_FILE)
        data = self._cat(manifest_where)
        if data is None:
            return text, where
        generation = manifest.generation_of(data, manifest_where)
        wanted = {e.path: e.sha256 for e in manifest.loads(data, manifest_where)}[manifest.INFO_FILE]
        if generation is None or hashlib.sha256(text).hexdigest() == wanted:
            return text, where
        own = f"{self._generation_dir(Tag(name, version), generation)}/{manifest.INFO_FILE}"
        own_text = self._cat(own)
        if own_text is None or hashlib.sha256(own_text).hexdigest() != wanted:
            raise StoreError(f"{where}: its generation {generation} is incomplete; the store was edited by hand")
        return own_text, own

    def _version_names(self, name: str) -> list[str]:
        out = []
        for version in self._ls_names(self._join(MODELS_DIR, name)):
            try:
                out.append(validate_version(version))
            except InvalidTag:
                continue  # not ours
        return out

    def version_names(self, name: str) -> list[str]:
        """The version folders of `name`, committed or not (`read_info` tells), unsorted; a name
        that cannot be a model's (a path, say) is an `InvalidTag`."""
        return self._version_names(validate_part(name, "name"))

    def read_info(self, name: str, version: str) -> ModelInfo | None:
        """The info of a committed version, or None when it is not (or no longer) committed; a
        name or version that cannot be one (a path, say) is an `InvalidTag`."""
        return self._read_info(validate_part(name, "name"), validate_version(version))

    def info_stamp(self, name: str, version: str) -> tuple[int, ...] | None:
        """What changes when a local version's `model.yaml` is written again (a version replaced
        in place, by a rename: a new inode): its inode, change time and size. None on object storage and for a version that
        is not committed: a reader that caches infos re-reads those after a while."""
        if not self.is_local:
            return None
        try:
            name, version = validate_part(name, "name"), validate_version(version)
            stat = os.stat(self._join(MODELS_DIR, name, version, manifest.INFO_FILE))
        except (OSError, InvalidTag):
            return None
        return stat.st_ino, stat.st_ctime_ns, stat.st_mtime_ns, stat.st_size

    def _versions(self, name: str, prefix: str = "") -> list[ModelInfo]:
        """Committed versions of `name` (starting with `prefix`), newest first; corrupt ones are skipped
        with a warning so that one bad folder does not hide the rest."""
        infos = []
        for version in self._version_names(name):
            if not version.startswith(prefix):
                continue
            try:
                info = self._read_info(name, version)
            except StoreError as exc:
                logger.warning("skipping %s:%s: %s", name, version, exc)
                continue
            if info is not None:
                infos.append(info)
        return sorted(infos, key=lambda i: (i.creation_time, i.version), reverse=True)

    def names(self) -> list[str]:
        out = []
        for name in self._ls_names(self._join(MODELS_DIR)):
            try:
                out.append(validate_part(name, "name"))
            except InvalidTag:
                continue
        return sorted(out)

    def list(self, name: str | None = None) -> list[StoredModel]:
        """Committed models, newest first; only versions of `name` when given."""
        if name is not None:
            tag = Tag.from_str(name)
            if tag.version is not None:  # name:VERSION or name:latest means that one version
                try:
                    return [self.get(tag)]
                except NotFound:
                    return []
            names = [tag.name]
        else:
            names = self.names()
        infos = [info for n in names for info in self._versions(n)]
        infos.sort(key=lambda i: (i.creation_time, i.version), reverse=True)
        return [StoredModel(self, info) for info in infos]

    def resolve(self, tag: str | Tag) -> ModelInfo:
        """The info of the version `tag` names: `latest`, an exact version or a unique prefix of one."""
        tag = Tag.from_taglike(tag)
        pinned = settings().pins.get(tag.name) if tag.is_latest else None
        if pinned:  # a deployment built against concrete versions: `latest` means the pinned one
            info = self._read_info(tag.name, pinned)
            if info is None:
                raise NotFound(f"{tag.name}:{pinned}, pinned by RAYSTORE_PINS, is not in {self.url}; push it there")
            return info
        if not tag.is_latest:
            info = self._read_info(tag.name, tag.version)
            if info is not None:
                return info
            info = self._aliased(tag.name, tag.version)
            if info is not None:
                return info
        versions = self._versions(tag.name, prefix="" if tag.is_latest else tag.version)
        if tag.is_latest and versions:
            return versions[0]
        if not versions and not self._version_names(tag.name):
            raise NotFound(f"no model named {tag.name!r} in {self.url}; `raystore models list` shows what exists")
        matches = versions
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(str(i.tag) for i in matches[:10])
            raise AmbiguousTag(f"version prefix {tag} matches {len(matches)} versions ({listed}); give more characters")
        raise NotFound(
            f"model {tag} not found in {self.url}: {tag.name} has no version or alias {tag.version!r}; "
            f"`raystore models list {tag.name}` shows its versions and aliases"
        )

    def _aliased(self, name: str, alias: str) -> ModelInfo | None:
        """The info of the version the alias `name:alias` names (pinned by RAYSTORE_PINS as built),
        or None when there is no such alias."""
        version = settings().pins.get(f"{name}:{alias}") or self.aliases.get(name, alias)
        if version is None:
            return None
        info = self._read_info(name, version)
        if info is None:
            raise NotFound(
                f"alias {name}:{alias} names version {version}, which is not in {self.url} (deleted, or not pushed "
                f"here); set it again with `raystore models alias {name}:VERSION {alias}`"
            )
        return info

    def get(self, tag: str | Tag) -> StoredModel:
        return StoredModel(self, self.resolve(tag))

    # ---- aliases ---------------------------------------------------------------------------

    def set_alias(self, tag: str | Tag, alias: str) -> Tag:
        """Make `NAME:alias` name the version `tag` names (moving the alias if it named another).
        Returns the version's tag."""
        info = self.resolve(tag)
        alias = validate_part(alias, "alias")
        if alias == LATEST:
            raise InvalidArgument(f"an alias may not be named {LATEST!r}: that word means the newest version")
        versions = self._version_names(info.name)
        shadowed = [v for v in versions if v.startswith(alias)]
        if shadowed:
            what = "is a version" if alias in shadowed else f"is the start of version {shadowed[0]}"
            raise InvalidArgument(
                f"alias {alias!r} {what} of {info.name}; a tag {info.name}:{alias} would be ambiguous"
            )
        self.aliases.put(info.name, alias, info.version)
        return info.tag

    def remove_alias(self, name: str, alias: str) -> str:
        """Remove the alias `name:alias`; returns the version it named."""
        name, alias = validate_part(name, "name"), validate_part(alias, "alias")
        version = self.aliases.get(name, alias)
        if version is None or not self.aliases.remove(name, alias):
            known = sorted(self.aliases.of_name(name))
            raise NotFound(f"{name} has no alias {alias!r} in {self.url}; its aliases are {known}")
        return version

    def content_key(self, tag: Tag) -> str | None:
        """What a committed version holds (its files, sizes and hashes, wherever they are kept),
        as a string to compare across stores; None when the version does not exist."""
        try:
            committed = self._committed(tag)
        except StoreError:
            return None  # a corrupt copy matches nothing
        return None if committed is None else manifest.dumps(sorted(committed[0], key=lambda e: e.path))

    def read_manifest(self, tag: Tag) -> list[FileEntry]:
        where = self._join(MODELS_DIR, tag.name, tag.version, manifest.MANIFEST_FILE)
        data = self._cat(where)
        if data is None:
            raise NotFound(f"model {tag} was deleted, or its manifest is missing ({where})")
        return manifest.loads(data, where)

    def presence(self, tag: Tag, entries: list[FileEntry]) -> Presence:
        """Whether `tag` is absent here, present with exactly these files, or present and different."""
        if self._read_info(tag.name, tag.version) is None:
            return "absent"
        try:
            existing = self.read_manifest(tag)
        except (NotFound, StoreError):
            return "different"
        return "identical" if manifest.same_files(existing, entries) else "different"

    def verify(self, tag: str | Tag) -> StoredModel:
        """Re-check every file of a version against its manifest; raise `StoreError` listing what differs."""
        model = self.get(tag)
        listed, base = self.snapshot(model.tag)
        expected = {entry.path: entry for entry in listed}
        problems = []
        with remote_errors(self.url):
            found = self.fs.find(base)
        present = {p[len(base) + 1 :] for p in found}
        present = {p for p in present if p != manifest.MANIFEST_FILE and not p.startswith(manifest.GENERATION_PREFIX)}
        for rel in sorted(present - set(expected)):
            problems.append(f"{rel}: not in the manifest")
        for rel, entry in expected.items():
            if rel not in present:
                problems.append(f"{rel}: missing")
                continue
            with remote_errors(self.url), self.fs.open(f"{base}/{rel}", "rb") as f:
                size, digest = manifest.sha256_of(f)
            if size != entry.size:
                problems.append(f"{rel}: {size} bytes, manifest says {entry.size}")
            elif digest != entry.sha256:
                problems.append(f"{rel}: sha256 differs from the manifest")
        if problems:
            raise StoreError(f"model {model.tag} failed verification: " + "; ".join(problems))
        return model

    # ---- writing ---------------------------------------------------------------------------

    @contextmanager
    def create(self, info: ModelInfo) -> Iterator[Path]:
        """Yield an empty local folder for a new version's files; commit it when the block succeeds.

        On success the folder gets `manifest.json` and then `model.yaml`, and becomes visible in one
        step. On an exception (or if the process dies) nothing becomes visible.
        """
        staging = self._new_staging_dir("stage")
        try:
            yield staging
            info_bytes = info.to_yaml().encode("utf-8")
            entries = manifest.scan_dir(staging, extra=[(manifest.INFO_FILE, info_bytes)])
            if self.is_local:
                (staging / manifest.MANIFEST_FILE).write_text(manifest.dumps(entries))
                (staging / manifest.INFO_FILE).write_bytes(info_bytes)
                self._install(staging, info.tag, force=False)
            else:
                (staging / manifest.INFO_FILE).write_bytes(info_bytes)
                self.put(info.tag, entries, lambda writer: writer.write_all(lambda rel: open(staging / rel, "rb")))
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def put(
        self, tag: Tag, entries: list[FileEntry], fill: Callable[[VersionWriter], None], *, force: bool = False
    ) -> tuple[StoredModel, Outcome]:
        """Put one version, whose files `entries` lists, into this store: the one way saves on
        object storage, imports, pushes, pulls and the node cache write a version.

        Identical content already here is a no-op ("identical"); different content is an error
        unless `force`. Otherwise `fill(writer)` writes every file, and the version commits only
        when all arrived intact; on any failure the store is left as it was.
        """
        presence = self.presence(tag, entries)
        if presence == "identical":
            return self.get(tag), "identical"
        if presence == "different" and not force:
            raise StoreError(
                f"model {tag} already exists in {self.url} with different content; use --force (force=True) to replace it"
            )
        writer = self.writer(tag, entries, force=force)
        try:
            fill(writer)
            return writer.commit(), "copied"
        except BaseException:
            writer.abort()
            raise

    def copy_from(
        self, src: ModelStore, tag: str | Tag, *, force: bool = False, on_bytes: OnBytes | None = None
    ) -> tuple[StoredModel, Outcome]:
        """Copy version `tag` (resolved in `src`) into this store, several files at a time, each
        checked against the source's manifest on the way (push, pull and the node cache)."""
        model = src.get(tag)
        entries, base = src.snapshot(model.tag)
        sizes = {entry.path: entry.size for entry in entries}
        with remote_errors(src.url if self.is_local else self.url):  # the side that can fail in interesting ways
            return self.put(
                model.tag,
                entries,
                lambda writer: writer.write_all(
                    lambda rel: src.open_file(model.tag, rel, sizes[rel], base=base), on_bytes
                ),
                force=force,
            )

    def writer(self, tag: Tag, entries: list[FileEntry], *, force: bool) -> VersionWriter:
        """A writer that receives exactly the files `entries` lists and then commits version `tag`."""
        cls = LocalVersionWriter if self.is_local else RemoteVersionWriter
        return cls(self, tag, entries, force)

    def _tmp_root(self) -> Path:
        return Path(self._join(TMP_DIR))

    def _new_staging_dir(self, kind: str) -> Path:
        """A new, empty staging folder, named for the process that owns it; first the staging of
        processes that died (and, when the owner cannot be told, of any untouched for a day) is
        removed."""
        try:
            if not self.is_local:
                return gc.local_temp_folder(kind)
            tmp = self._tmp_root()
            tmp.mkdir(parents=True, exist_ok=True)
            gc.sweep(gc.local_staging(tmp, gc.STALE_SECONDS))
            path = tmp / gc.owned_name(kind)
            path.mkdir()
        except OSError as exc:
            raise StoreError(f"cannot write to the store at {self.url}: {exc.strerror}: {exc.filename}") from None
        return path

    def _install(self, staging: Path, tag: Tag, *, force: bool) -> None:
        """Rename a complete local staging folder into place (replacing an existing version if `force`)."""
        target = self._version_dir(tag)
        name_dir = Path(target).parent
        if force and os.path.exists(target):
            if _exchange(staging, target):  # one atomic step: readers see the old version or the new
                shutil.rmtree(staging, ignore_errors=True)  # now the old one
                return
            self._remove_version(tag, missing_ok=True)  # no atomic swap on this system: a brief gap
        for _ in range(100):  # a concurrent delete may remove the (empty) name folder under us
            name_dir.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, target)
                return
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
                    raise StoreError(f"model {tag} already exists in {self.url}") from None
                raise StoreError(f"could not move {staging} to {target}: {exc.strerror}") from None
        raise StoreError(f"could not commit {tag}: {name_dir} kept disappearing")

    def delete(self, tag: str | Tag, *, remove_aliases: bool = False) -> Tag:
        """Delete one version (`name` or `name:latest`: the newest). Returns the deleted tag.
        A version that an alias names is deleted, with those aliases, only with `remove_aliases`.

        An exact version is removed without reading its model.yaml, so a corrupt version can go too.
        """
        tag = Tag.from_taglike(tag)
        if tag.is_latest or tag.version not in self._version_names(tag.name):
            tag = self.resolve(tag).tag
        self._delete_versions([tag], remove_aliases)
        return tag

    def delete_all(self, name: str, *, remove_aliases: bool = False) -> list[Tag]:
        """Delete every version of `name` (and its aliases, which `remove_aliases` must allow).
        Returns the deleted tags."""
        tag = Tag.from_str(name)
        versions = self._versions(tag.name)
        if not versions:
            raise NotFound(f"no model named {tag.name!r} in {self.url}")
        tags = [info.tag for info in versions]
        self._delete_versions(tags, remove_aliases)
        return tags

    def _delete_versions(self, tags: list[Tag], remove_aliases: bool) -> None:
        """Delete versions of one model, and the aliases naming them, which `remove_aliases` must allow."""
        name = tags[0].name
        named = self.aliases.naming(name, {t.version for t in tags})
        if named and not remove_aliases:
            listed = ", ".join(f"{name}:{alias} -> {version}" for alias, version in named.items())
            raise InvalidArgument(
                f"aliases name what would be deleted ({listed}): move or remove them first, or delete "
                "with remove_aliases=True (`raystore models delete` asks)"
            )
        for tag in tags:
            self._remove_version(tag)
        for alias in named:
            self.aliases.remove(name, alias)

    def _remove_version(self, tag: Tag, *, missing_ok: bool = False) -> None:
        target = self._version_dir(tag)
        if not self.is_local:
            with remote_errors(self.url):
                try:
                    self.fs.rm_file(f"{target}/{manifest.INFO_FILE}")  # the version stops existing here
                except FileNotFoundError:
                    if not missing_ok:
                        raise NotFound(f"model {tag} was already deleted") from None
                try:
                    self.fs.invalidate_cache(target)  # list what is there now, not what was
                    self.fs.rm(target, recursive=True)
                except FileNotFoundError:
                    pass
            return
        graveyard = self._new_staging_dir("deleted")
        graveyard.rmdir()
        try:
            os.rename(target, graveyard)
        except FileNotFoundError:
            if missing_ok:
                return
            raise NotFound(f"model {tag} was already deleted") from None
        except OSError as exc:
            raise StoreError(f"could not delete {tag}: moving {target} away failed: {exc.strerror}") from None
        shutil.rmtree(graveyard, ignore_errors=True)
        try:
            os.rmdir(Path(target).parent)  # only succeeds when no version is left
        except OSError:
            pass


def _exchange(a: Path, b: str) -> bool:
    """Swap two paths in one atomic step (Linux `renameat2(RENAME_EXCHANGE)`); False where the
    system or file system cannot."""
    if sys.platform != "linux":
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.ENOENT, errno.EXDEV):
        return False  # unsupported here, or the old version went meanwhile: the plain path follows
    raise StoreError(f"could not swap {a} into {b}: {os.strerror(error)}")


class VersionWriter:
    """Receives the files of one version, each checked against its manifest entry, then commits.

    Nothing is visible until `commit()`; `abort()` (or an exception inside `write_all`) removes
    what was written.
    """

    def __init__(self, store: ModelStore, tag: Tag, entries: list[FileEntry], force: bool):
        self.store, self.tag, self.force = store, tag, force
        self.entries = {e.path: e for e in entries}
        if manifest.INFO_FILE not in self.entries:
            raise StoreError(f"the manifest of {tag} does not list {manifest.INFO_FILE}")
        if self.entries[manifest.INFO_FILE].size > MAX_INFO_BYTES:
            raise StoreError(f"{manifest.INFO_FILE} of {tag} is larger than {MAX_INFO_BYTES} bytes")
        self._written: set[str] = set()
        self._lock = threading.Lock()
        self.info_bytes: bytes | None = None

    def write(self, relpath: str, src: BinaryIO, on_bytes: OnBytes | None = None) -> None:
        entry = self.entries.get(relpath)
        if entry is None:
            raise StoreError(f"{relpath!r} is not listed in the manifest of {self.tag}")
        with self._lock:
            if relpath in self._written:
                raise StoreError(f"{relpath!r} appears twice in {self.tag}")
            self._written.add(relpath)
        if relpath == manifest.INFO_FILE:
            buffer = io.BytesIO()
            copy_verified(src, buffer, entry, on_bytes)
            self.info_bytes = buffer.getvalue()
            self._write_info_early(self.info_bytes)
            return
        self._write_file(relpath, src, entry, on_bytes)

    def write_all(self, opener, on_bytes: OnBytes | None = None) -> None:
        """Write every listed file, several at a time; `opener(relpath)` returns a readable stream."""

        def task(rel: str) -> None:
            with opener(rel) as src:
                self.write(rel, src, on_bytes)

        run_parallel([lambda rel=rel: task(rel) for rel in self.entries])

    def missing(self) -> list[str]:
        return sorted(set(self.entries) - self._written)

    def _check_complete(self) -> ModelInfo:
        if self.missing():
            raise StoreError(f"{self.tag} is incomplete: missing {', '.join(self.missing())}")
        info = ModelInfo.from_yaml(self.info_bytes.decode("utf-8", errors="replace"), f"{self.tag}/model.yaml")
        if info.tag != self.tag:
            raise StoreError(f"model.yaml describes {info.tag}, not {self.tag}")
        if info.creation_time > datetime.datetime.now(datetime.UTC) + MAX_CLOCK_SKEW:
            raise StoreError(
                f"model.yaml of {self.tag} is dated {info.creation_time.isoformat()}, in the future: refused, "
                "since `latest` would mean it until then (is a clock wrong?)"
            )
        return info

    def _manifest_text(self, generation: str | None = None) -> str:
        return manifest.dumps(sorted(self.entries.values(), key=lambda e: e.path), generation)

    # subclass hooks
    def _write_file(self, relpath: str, src: BinaryIO, entry: FileEntry, on_bytes: OnBytes | None) -> None:
        raise NotImplementedError

    def _write_info_early(self, data: bytes) -> None:
        """Local staging may write model.yaml at once; remote stores must wait for commit."""

    def commit(self) -> StoredModel:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError


class LocalVersionWriter(VersionWriter):
    def __init__(self, store: ModelStore, tag: Tag, entries: list[FileEntry], force: bool):
        super().__init__(store, tag, entries, force)
        self.staging = store._new_staging_dir("stage")

    def _write_file(self, relpath, src, entry, on_bytes):
        path = self.staging / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb", buffering=0) as dst:  # chunks are large: no second buffer
            copy_verified(src, dst, entry, on_bytes)

    def _write_info_early(self, data: bytes) -> None:
        (self.staging / manifest.INFO_FILE).write_bytes(data)

    def commit(self) -> StoredModel:
        try:
            info = self._check_complete()
            for entry in self.entries.values():  # still there: nothing removed the staging meanwhile
                path = self.staging / entry.path
                if not path.is_file() or path.stat().st_size != entry.size:
                    raise StoreError(f"{self.tag}: {entry.path} vanished from the staging folder before the commit")
            (self.staging / manifest.MANIFEST_FILE).write_text(self._manifest_text())
            self.store._install(self.staging, self.tag, force=self.force)
            return StoredModel(self.store, info)
        finally:
            self.abort()

    def abort(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)


class RemoteVersionWriter(VersionWriter):
    """Writes a version to object storage without ever hiding or destroying a committed one.

    The files go to a generation folder of this writer's own (`.g-<uuid>/` in the version's
    folder). `commit` switches the version to it by writing the manifest (the commit point:
    readers follow it), then `model.yaml`. The generation it replaced stays for readers still
    copying it, until a sweep an hour later. `abort` removes this writer's generation and nothing
    else, so an interrupted push never touches what another committed.
    """

    def __init__(self, store: ModelStore, tag: Tag, entries: list[FileEntry], force: bool):
        super().__init__(store, tag, entries, force)
        if store._read_info(tag.name, tag.version) is not None and not force:
            raise StoreError(f"model {tag} already exists in {store.url}")
        self.generation = uuid.uuid4().hex
        self.files = store._generation_dir(tag, self.generation)
        self._switching = False

    def _write_file(self, relpath, src, entry, on_bytes):
        with remote_errors(self.store.url), self.store.fs.open(f"{self.files}/{relpath}", "wb") as dst:
            copy_verified(src, dst, entry, on_bytes)

    def commit(self) -> StoredModel:
        info = self._check_complete()
        fs, version_dir = self.store.fs, self.store._version_dir(self.tag)
        with remote_errors(self.store.url):
            fs.pipe_file(f"{self.files}/{manifest.INFO_FILE}", self.info_bytes)
            previous = self.store._committed(self.tag)  # again: another writer may have committed meanwhile
            if previous is not None and not self.force:
                return self._yield_to(previous, info)
            self._switching = True  # from here on the manifest may name this generation: abort keeps it
            manifest_path, text = f"{version_dir}/{manifest.MANIFEST_FILE}", self._manifest_text(self.generation)
            if self.force:
                fs.pipe_file(manifest_path, text.encode())
            elif not create_exclusive(fs, manifest_path, text.encode()):
                # Another writer committed between the check above and this write: theirs stands.
                return self._yield_to(self.store._committed(self.tag), info)
            # The version is this generation now (readers follow the manifest); the model.yaml
            # beside it makes a new version visible and lets readers skip a second request.
            fs.pipe_file(f"{version_dir}/{manifest.INFO_FILE}", self.info_bytes)
        # What this replaced stays for readers still copying it; sweeps remove it after an hour.
        self._sweep()
        return StoredModel(self.store, info)

    def _yield_to(self, theirs: tuple | None, info: ModelInfo) -> StoredModel:
        """Another writer committed this version first: remove this writer's upload. Theirs will do
        when it holds the same files; otherwise this write is refused."""
        self._switching = False  # the manifest never named this generation
        self.abort()
        if theirs is not None and manifest.same_files(theirs[0], self.entries.values()):
            return StoredModel(self.store, info)
        raise StoreError(f"model {self.tag} was written to {self.store.url} by someone else meanwhile")

    def _sweep(self) -> None:
        """Leftovers of earlier interrupted writes of this version (bounded: one listing of its
        folder, one of the multipart uploads under it); the rest is for `raystore models gc`."""
        try:
            version_dir = self.store._version_dir(self.tag)
            leftovers = gc.version_leftovers(self.store, self.tag, SWEEP_AFTER_S, keep=self.generation)
            leftovers += gc.multipart_leftovers(self.store, f"{version_dir}/", SWEEP_UPLOADS_AFTER_S)
            gc.sweep(leftovers)
        except Exception as exc:
            logger.debug("sweeping %s after a write failed: %s", self.tag, exc)

    def abort(self) -> None:
        """Remove this writer's generation, unless the manifest already names it (a commit that
        failed after switching: then it is the version, and stays)."""
        try:
            if self._switching:
                committed = self.store._committed(self.tag)
                if committed is not None and committed[1] == self.generation:
                    return
            self.store.fs.invalidate_cache(self.files)  # a listing from before our last upload misses files
            self.store.fs.rm(self.files, recursive=True)
        except Exception:  # best effort: an invisible leftover that `raystore models gc` removes
            pass
