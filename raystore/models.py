"""Module-level store API over the configured store: `raystore.models.get`, `list`, `delete`."""

from __future__ import annotations

import builtins

from raystore.store import Model, default_store
from raystore.tag import Tag


def get(tag: str | Tag) -> Model:
    """The model `tag` names (`name`, `name:latest`, `name:VERSION` or a unique version prefix)."""
    return default_store().get(tag)


def list(name: str | None = None) -> builtins.list[Model]:  # noqa: A001 - mirrors bentoml.models.list
    """Committed models, newest first; only versions of `name` when given."""
    return default_store().list(name)


def delete(tag: str | Tag) -> Tag:
    """Delete one version; a bare name or `name:latest` deletes the newest. Returns the deleted tag."""
    return default_store().delete(tag)


def delete_all(name: str) -> builtins.list[Tag]:
    """Delete every version of `name`. Returns the deleted tags."""
    return default_store().delete_all(name)
