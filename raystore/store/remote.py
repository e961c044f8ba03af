"""Copying versions between stores: push to and pull from the remote bucket, and the node cache.

A copy streams every file from the source, checks its sha256 against the source's manifest on
the way, and commits in the destination only when all of them arrived intact.
"""

from __future__ import annotations

from typing import Literal

from raystore.config import settings
from raystore.exceptions import InvalidArgument, StoreError
from raystore.store.fs import remote_errors
from raystore.store.model import Model
from raystore.store.model_store import ModelStore
from raystore.store.transfer import OnBytes
from raystore.tag import Tag

Outcome = Literal["copied", "identical"]


def remote_store(url: str | None = None) -> ModelStore:
    """The remote store push/pull talk to: `url`, else `RAYSTORE_REMOTE` or `remote:` in the config file."""
    url = url or settings().remote
    if not url:
        raise InvalidArgument(
            "no remote configured: set RAYSTORE_REMOTE=s3://bucket/prefix (or 'remote:' in ~/.raystore/config.yaml)"
        )
    return ModelStore(url)


def copy_version(
    src: ModelStore, dst: ModelStore, tag: str | Tag, *, force: bool = False, on_bytes: OnBytes | None = None
) -> tuple[Model, Outcome]:
    """Copy version `tag` (resolved in `src`) into `dst`.

    Identical content already in `dst` is a no-op ("identical"); different content is an error
    unless `force`. On any failure `dst` is left as it was.
    """
    model = src.get(tag)
    entries = model.manifest
    presence = dst.presence(model.tag, entries)
    if presence == "identical":
        return dst.get(model.tag), "identical"
    if presence == "different" and not force:
        raise StoreError(
            f"model {model.tag} already exists in {dst.url} with different content; pass force=True (--force) to replace it"
        )
    remote_url = src.url if dst.is_local else dst.url  # the side that can fail in interesting ways
    with remote_errors(remote_url):
        writer = dst.writer(model.tag, entries, force=force)
        try:
            sizes = {entry.path: entry.size for entry in entries}
            writer.write_all(lambda rel: src.open_file(model.tag, rel, sizes[rel]), on_bytes)
            return writer.commit(), "copied"
        except BaseException:
            writer.abort()
            raise
