"""The node-local cache of models read from a remote store: each version is downloaded once per
node (under a file lock, so concurrent loaders wait for one download), verified against its
manifest and renamed into place, then loaded from local disk."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock

from raystore.config import settings
from raystore.tag import Tag

if TYPE_CHECKING:
    from raystore._private.store.model_store import ModelStore


class NodeCache:
    def __init__(self, root: str | Path):
        self.root = Path(root)

    @classmethod
    def default(cls) -> NodeCache:
        return cls(settings().cache_dir)

    def _store_for(self, remote: ModelStore) -> ModelStore:
        """Each remote store gets its own local store under the cache root (a store of the same
        class: `ModelStore` reaches its cache, never the other way round)."""
        key = hashlib.sha256(remote.url.encode()).hexdigest()[:16]
        return type(remote)(str(self.root / key))

    def fetch(self, remote: ModelStore, tag: Tag) -> tuple[Path, bool]:
        """The local folder of `tag`, and whether this call downloaded it."""
        local = self._store_for(remote)
        wanted = remote.content_key(tag)
        if wanted is not None and local.content_key(tag) == wanted:
            return local.local_copy(tag), False  # fast path: no lock needed, folders appear whole
        lock_path = Path(local.root) / ".locks" / f"{tag.name}-{tag.version}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_path)):
            wanted = remote.content_key(tag)
            if wanted is not None and local.content_key(tag) == wanted:
                return local.local_copy(tag), False  # another process downloaded it meanwhile
            local.copy_from(remote, tag, force=True)
            return local.local_copy(tag), True
