"""Aliases: `NAME:ALIAS` names a version of NAME (`iris_clf:prod`), wherever a tag is accepted.

An alias is one small file, `<root>/aliases/<name>/<alias>`, holding the version. Writing it is
one atomic step (locally a rename over it, on object storage one PUT), so a reader sees the old
version or the new one, never a torn file. It lives beside the versions, not in them: a version's
files never change, an alias moves. Resolution (in `ModelStore.resolve`): an exact version first,
then an alias, then a version prefix; so an alias may be neither a version nor the start of one.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Collection
from typing import TYPE_CHECKING

from raystore._private.store.fs import remote_errors
from raystore.exceptions import InvalidTag, StoreError
from raystore.tag import validate_part, validate_version

if TYPE_CHECKING:
    from raystore._private.store.model_store import ModelStore

logger = logging.getLogger("raystore.store")

ALIASES_DIR = "aliases"
MAX_ALIAS_BYTES = 256  # a version and a newline; anything longer was not written by raystore


class Aliases:
    """The aliases of one store."""

    def __init__(self, store: ModelStore):
        self.store = store

    def _dir(self, name: str) -> str:
        return self.store._join(ALIASES_DIR, name)

    def get(self, name: str, alias: str) -> str | None:
        """The version `NAME:ALIAS` names, or None when there is no such alias."""
        data = self.store._cat(f"{self._dir(name)}/{alias}")
        if data is None:
            return None
        return self._version_in(data, name, alias)

    def _version_in(self, data: bytes, name: str, alias: str) -> str:
        try:
            if len(data) > MAX_ALIAS_BYTES:
                raise InvalidTag("too long")
            return validate_version(data.decode("ascii").strip())
        except (UnicodeDecodeError, InvalidTag):
            raise StoreError(
                f"alias {name}:{alias} in {self.store.url} does not hold a version; set it again with "
                f"`raystore models alias {name}:VERSION {alias}`"
            ) from None

    def of_name(self, name: str) -> dict[str, str]:
        """Every alias of NAME -> the version it names."""
        found = {}
        for alias in self.store._ls_names(self._dir(name)):
            try:
                validate_part(alias, "alias")
            except InvalidTag:
                continue  # not ours (a temporary file, an editor's backup)
            try:
                version = self.get(name, alias)
            except StoreError as exc:  # one bad alias must not hide the others (resolving it says why)
                logger.warning("%s", exc)
                continue
            if version is not None:
                found[alias] = version
        return found

    def naming(self, name: str, versions: Collection[str]) -> dict[str, str]:
        """The aliases of NAME that name one of `versions` -> the version each names."""
        return {alias: v for alias, v in sorted(self.of_name(name).items()) if v in versions}

    def of_version(self, name: str, version: str) -> list[str]:
        return list(self.naming(name, {version}))

    def put(self, name: str, alias: str, version: str) -> None:
        data = f"{version}\n".encode()
        target = f"{self._dir(name)}/{alias}"
        store = self.store
        if not store.is_local:
            with remote_errors(store.url):
                store.fs.pipe_file(target, data)
            return
        staging = f"{self._dir(name)}/.{alias}.{uuid.uuid4().hex}.tmp"  # same folder: the rename is atomic
        for attempt in range(3):
            try:
                os.makedirs(self._dir(name), exist_ok=True)
                with open(staging, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(staging, target)
                return
            except FileNotFoundError:
                if attempt == 2:  # the folder went each time: the last alias removed meanwhile
                    raise StoreError(
                        f"could not write alias {name}:{alias} in {store.url}: its folder kept vanishing"
                    ) from None
            except OSError as exc:
                raise StoreError(f"could not write alias {name}:{alias} in {store.url}: {exc.strerror}") from None
            finally:
                if os.path.exists(staging):
                    os.unlink(staging)

    def remove(self, name: str, alias: str) -> bool:
        """Remove one alias; whether it was there."""
        target = f"{self._dir(name)}/{alias}"
        store = self.store
        if store._cat(target) is None:  # object storage deletes a missing key without a word
            return False
        try:
            with remote_errors(store.url):
                store.fs.rm_file(target)
        except FileNotFoundError:
            return False
        if store.is_local:
            try:
                os.rmdir(self._dir(name))  # only succeeds when no alias is left
            except OSError:
                pass
        return True
