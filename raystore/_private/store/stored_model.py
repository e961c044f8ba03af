"""`StoredModel`: one committed version in a store, with its info, files and custom objects.

The store's own record. `raystore.Model`, which users get, adds `to_runner` in the runner layer:
the store knows nothing of runners."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cloudpickle

from raystore._private.store import manifest
from raystore._private.store.info import ModelInfo
from raystore.exceptions import NotFound
from raystore.tag import Tag

if TYPE_CHECKING:
    from raystore._private.store.model_store import ModelStore

CUSTOM_OBJECTS_FILE = "custom_objects.pkl"


class StoredModel:
    """A model version as the store holds it. Load its object through the framework module."""

    def __init__(self, store: ModelStore, info: ModelInfo):
        self._store = store
        self.info = info

    @property
    def tag(self) -> Tag:
        return self.info.tag

    @property
    def store(self) -> ModelStore:
        return self._store

    @property
    def path(self) -> str:
        """Where the version lives in its store: a local folder or a URL."""
        return self._store.location_of(self.tag)

    @cached_property
    def local_path(self) -> Path:
        """A local folder holding the version's files, ready to load from."""
        return self._store.local_copy(self.tag)

    def path_of(self, relpath: str) -> Path:
        """Local path of one of the version's files."""
        return self.local_path / relpath

    @cached_property
    def manifest(self) -> list[manifest.FileEntry]:
        return self._store.read_manifest(self.tag)

    @property
    def aliases(self) -> list[str]:
        """The aliases that name this version now (read from the store on each access: they move)."""
        return self._store.aliases.of_version(self.tag.name, self.tag.version)

    @property
    def size(self) -> int:
        """Total bytes of the version's files."""
        return sum(entry.size for entry in self.manifest)

    @cached_property
    def custom_objects(self) -> dict[str, Any]:
        """The `custom_objects` given at save time, unpickled on first access."""
        path = self.path_of(CUSTOM_OBJECTS_FILE)
        try:
            with open(path, "rb") as f:
                return cloudpickle.load(f)
        except FileNotFoundError:
            raise NotFound(f"model {self.tag} was deleted while reading its custom objects") from None

    def __repr__(self) -> str:
        return f'{type(self).__name__}(tag="{self.tag}")'

    def __eq__(self, other: object) -> bool:
        return isinstance(other, StoredModel) and other.tag == self.tag and other.path == self.path

    def __hash__(self) -> int:
        return hash((self.tag, self.path))
