"""`ModelStore`: committed model versions in folders `<root>/models/<name>/<version>/` on any fsspec filesystem.

Rules that keep every reader safe without locks:
- a version exists when its folder holds `model.yaml`, written last (locally the whole folder is
  built under `<root>/.tmp/` and renamed into place in one step);
- deleting renames the folder away first, then removes it;
- `latest` is computed from committed versions every time, never stored.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import fsspec
from fsspec.implementations.local import LocalFileSystem

from raystore.exceptions import AmbiguousTag, InvalidTag, NotFound, StoreError
from raystore.store import manifest
from raystore.store.info import ModelInfo
from raystore.store.model import Model
from raystore.tag import Tag, validate_part

MODELS_DIR = "models"
TMP_DIR = ".tmp"
STALE_TMP_SECONDS = 24 * 3600


class ModelStore:
    def __init__(self, root: str | os.PathLike):
        self.url = str(root)
        self.fs, self.root = fsspec.core.url_to_fs(self.url)
        self.is_local = isinstance(self.fs, LocalFileSystem)

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
        if self.is_local:
            return Path(self._version_dir(tag))
        raise StoreError(f"loading from a remote store ({self.url}) needs the node cache, which is not set up")

    # ---- reading ---------------------------------------------------------------------------

    def _ls_names(self, path: str) -> list[str]:
        try:
            return [p.rstrip("/").rsplit("/", 1)[-1] for p in self.fs.ls(path, detail=False)]
        except FileNotFoundError:
            return []

    def _read_info(self, name: str, version: str) -> ModelInfo | None:
        where = self._join(MODELS_DIR, name, version, manifest.INFO_FILE)
        try:
            text = self.fs.cat_file(where)
        except (FileNotFoundError, NotADirectoryError):
            return None  # not committed, or deleted since it was listed
        info = ModelInfo.from_yaml(text.decode("utf-8"), where)
        if (info.name, info.version) != (name, version):
            raise StoreError(f"{where} describes {info.tag}, not {name}:{version}; the store was edited by hand")
        return info

    def _versions(self, name: str) -> list[ModelInfo]:
        """Committed versions of `name`, newest first."""
        infos = []
        for version in self._ls_names(self._join(MODELS_DIR, name)):
            try:
                validate_part(version, "version")
            except InvalidTag:
                continue  # not ours
            info = self._read_info(name, version)
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

    def list(self, name: str | None = None) -> list[Model]:
        """Committed models, newest first; only versions of `name` when given."""
        if name is not None:
            tag = Tag.from_str(name)
            if not tag.is_latest:
                return [self.get(tag)]
            names = [tag.name]
        else:
            names = self.names()
        infos = [info for n in names for info in self._versions(n)]
        infos.sort(key=lambda i: (i.creation_time, i.version), reverse=True)
        return [Model(self, info) for info in infos]

    def resolve(self, tag: str | Tag) -> ModelInfo:
        """The info of the version `tag` names: `latest`, an exact version or a unique prefix of one."""
        tag = Tag.from_taglike(tag)
        if tag.is_latest:
            versions = self._versions(tag.name)
            if not versions:
                raise NotFound(f"no model named {tag.name!r} in {self.url}; `raystore models list` shows what exists")
            return versions[0]
        info = self._read_info(tag.name, tag.version)
        if info is not None:
            return info
        versions = self._versions(tag.name)
        if not versions:
            raise NotFound(f"no model named {tag.name!r} in {self.url}; `raystore models list` shows what exists")
        matches = [i for i in versions if i.version.startswith(tag.version)]
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(str(i.tag) for i in matches[:10])
            raise AmbiguousTag(f"version prefix {tag} matches {len(matches)} versions ({listed}); give more characters")
        raise NotFound(
            f"model {tag} not found in {self.url}; `raystore models list {tag.name}` shows its versions"
        )

    def get(self, tag: str | Tag) -> Model:
        return Model(self, self.resolve(tag))

    def read_manifest(self, tag: Tag) -> list[manifest.FileEntry]:
        where = self._join(MODELS_DIR, tag.name, tag.version, manifest.MANIFEST_FILE)
        try:
            return manifest.loads(self.fs.cat_file(where), where)
        except FileNotFoundError:
            raise NotFound(f"model {tag} was deleted, or its manifest is missing ({where})") from None

    def verify(self, tag: str | Tag) -> Model:
        """Re-check every file of a version against its manifest; raise `StoreError` listing what differs."""
        model = self.get(tag)
        base = self._version_dir(model.tag)
        expected = {entry.path: entry for entry in model.manifest}
        problems = []
        present = {
            p[len(base) + 1 :] for p in self.fs.find(base) if p[len(base) + 1 :] != manifest.MANIFEST_FILE
        }
        for rel in sorted(present - set(expected)):
            problems.append(f"{rel}: not in the manifest")
        for rel, entry in expected.items():
            if rel not in present:
                problems.append(f"{rel}: missing")
                continue
            with self.fs.open(f"{base}/{rel}", "rb") as f:
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
        """Yield an empty local folder for the version's files; commit it when the block succeeds.

        On success the folder gets `manifest.json` and then `model.yaml`, and becomes visible in one
        step. On an exception (or if the process dies) nothing becomes visible.
        """
        staging = self._new_staging_dir("stage")
        try:
            yield staging
            info_bytes = info.to_yaml().encode("utf-8")
            entries = manifest.scan_dir(staging, extra=[(manifest.INFO_FILE, info_bytes)])
            (staging / manifest.MANIFEST_FILE).write_text(manifest.dumps(entries))
            (staging / manifest.INFO_FILE).write_bytes(info_bytes)
            self._commit(staging, info.tag)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _tmp_root(self) -> Path:
        return Path(self._join(TMP_DIR))

    def _new_staging_dir(self, kind: str) -> Path:
        if not self.is_local:
            return Path(tempfile.mkdtemp(prefix=f"raystore-{kind}-"))
        tmp = self._tmp_root()
        tmp.mkdir(parents=True, exist_ok=True)
        self._collect_garbage(tmp)
        path = tmp / f"{kind}-{uuid.uuid4().hex}"
        path.mkdir()
        return path

    @staticmethod
    def _collect_garbage(tmp: Path) -> None:
        """Remove leftovers of saves and deletes whose process died long ago."""
        cutoff = time.time() - STALE_TMP_SECONDS
        for entry in tmp.iterdir():
            try:
                if entry.stat().st_mtime < cutoff:
                    shutil.rmtree(entry, ignore_errors=True)
            except FileNotFoundError:
                pass

    def _commit(self, staging: Path, tag: Tag) -> None:
        target = self._version_dir(tag)
        if not self.is_local:
            if self.fs.exists(self._join(MODELS_DIR, tag.name, tag.version, manifest.INFO_FILE)):
                raise StoreError(f"model {tag} already exists in {self.url}")
            files = sorted(p for p in staging.rglob("*") if p.is_file() and p.name != manifest.INFO_FILE)
            for path in files:
                self.fs.put_file(str(path), f"{target}/{path.relative_to(staging).as_posix()}")
            self.fs.put_file(str(staging / manifest.INFO_FILE), f"{target}/{manifest.INFO_FILE}")
            return
        name_dir = Path(target).parent
        for _ in range(100):  # a concurrent delete may remove the (empty) name folder under us
            name_dir.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staging, target)
                return
            except FileNotFoundError:
                continue
            except OSError as exc:  # target exists and is not empty
                raise StoreError(f"model {tag} already exists in {self.url} ({exc.strerror})") from None
        raise StoreError(f"could not commit {tag}: {name_dir} kept disappearing")

    def delete(self, tag: str | Tag) -> Tag:
        """Delete one version (`name` or `name:latest`: the newest). Returns the deleted tag."""
        info = self.resolve(tag)
        self._remove_version(info.tag)
        return info.tag

    def delete_all(self, name: str) -> list[Tag]:
        """Delete every version of `name`. Returns the deleted tags."""
        tag = Tag.from_str(name)
        versions = self._versions(tag.name)
        if not versions:
            raise NotFound(f"no model named {tag.name!r} in {self.url}")
        for info in versions:
            self._remove_version(info.tag)
        return [info.tag for info in versions]

    def _remove_version(self, tag: Tag) -> None:
        target = self._version_dir(tag)
        if not self.is_local:
            # model.yaml goes first so that the version stops existing before its files go.
            try:
                self.fs.rm_file(f"{target}/{manifest.INFO_FILE}")
            except FileNotFoundError:
                raise NotFound(f"model {tag} was already deleted") from None
            self.fs.rm(target, recursive=True)
            return
        graveyard = self._new_staging_dir("deleted")
        graveyard.rmdir()
        try:
            os.rename(target, graveyard)
        except FileNotFoundError:
            raise NotFound(f"model {tag} was already deleted") from None
        shutil.rmtree(graveyard, ignore_errors=True)
        try:
            os.rmdir(Path(target).parent)  # only succeeds when no version is left
        except OSError:
            pass
