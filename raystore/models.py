"""Public `raystore.models`: the configured store's create, get, list, delete, aliases, export, import, push,
pull, gc.

Transfers print one line saying what they did (to stderr, `quiet=True` silences it) and show a
progress bar for large models when stderr is a terminal.
"""

from __future__ import annotations

import builtins
import sys

from raystore._private.frameworks.own_files import create as create  # public here: raystore.models.create
from raystore._private.runner.model import Model
from raystore._private.runner.versions import runner_for as runner_for  # public here: raystore.models.runner_for
from raystore._private.store import Outcome, archive, default_store, remote_store
from raystore._private.store.fs import open_filesystem
from raystore._private.store.gc import local_temp_leftovers, store_leftovers, sweep
from raystore._private.store.model_store import ModelStore
from raystore._private.store.progress import progress_bar
from raystore.exceptions import InvalidArgument
from raystore.tag import Tag


def get(tag: str | Tag) -> Model:
    """The model `tag` names (`name`, `name:latest`, `name:VERSION` or a unique version prefix)."""
    return Model.of(default_store().get(tag))


def list(name: str | None = None, *, remote: bool = False) -> builtins.list[Model]:  # noqa: A001
    """Committed models, newest first; only versions of `name` when given; the remote's with `remote=True`."""
    return [Model.of(m) for m in (remote_store() if remote else default_store()).list(name)]


def delete(tag: str | Tag, *, remove_aliases: bool = False) -> Tag:
    """Delete one version; a bare name or `name:latest` deletes the newest. Returns the deleted tag.
    A version an alias names is deleted (with the alias) only with `remove_aliases=True`."""
    return default_store().delete(tag, remove_aliases=remove_aliases)


def delete_all(name: str, *, remove_aliases: bool = False) -> builtins.list[Tag]:
    """Delete every version of `name` (and, with `remove_aliases=True`, its aliases). Returns the deleted tags."""
    return default_store().delete_all(name, remove_aliases=remove_aliases)


def set_alias(tag: str | Tag, alias: str) -> Tag:
    """Make `NAME:alias` name the version `tag` names, wherever a tag is accepted (moving the alias
    if it named another version). An alias may not be `latest`, a version, or the start of one.
    Returns the version's tag."""
    return default_store().set_alias(tag, alias)


def remove_alias(name: str, alias: str) -> str:
    """Remove the alias `name:alias` (the version stays); returns the version it named."""
    return default_store().remove_alias(name, alias)


def aliases(name: str, *, remote: bool = False) -> dict[str, str]:
    """The aliases of model `name`: alias -> version."""
    return (remote_store() if remote else default_store()).aliases.of_name(Tag.from_str(name).name)


def verify(tag: str | Tag) -> Model:
    """Re-check a stored version's files against its manifest (raises `StoreError` listing differences)."""
    return Model.of(default_store().verify(tag))


def export_model(
    tag: str | Tag, path: str = ".", *, compression: str | None = None, force: bool = False, quiet: bool = False
) -> str:
    """Write `tag` as an archive to `path`: a file, an existing folder, or an fsspec URL
    (`s3://bucket/prefix/`). An archive already there is overwritten only with `force=True`."""
    model = get(tag)
    with _bar(quiet, f"Exporting {model.tag}", model.size) as on_bytes:
        where = archive.export_model(model, path, compression=compression, force=force, on_bytes=on_bytes)
    _say(quiet, f"{model} exported to {where}")
    return where


def import_model(
    path: str, *, force: bool = False, quiet: bool = False, max_size: int = archive.DEFAULT_MAX_SIZE
) -> Model:
    """Import an archive from a file or URL into the store; identical content already there is a
    no-op. An archive declaring more than `max_size` bytes of files (200 GiB) is refused."""
    with _bar(quiet, f"Importing {path}", _size_of(path)) as on_bytes:
        model, outcome = archive.import_model(default_store(), path, force=force, on_bytes=on_bytes, max_size=max_size)
    model = Model.of(model)
    _say(quiet, _outcome_line(model, outcome, f"imported from {path}", default_store().url))
    return model


def push(tag: str | Tag, *, force: bool = False, remote: str | None = None, quiet: bool = False) -> Model:
    """Copy a local version to the remote (`RAYSTORE_REMOTE`); returns the remote model."""
    src, dst = default_store(), remote_store(remote)
    model = src.get(tag)
    with _bar(quiet, f"Pushing {model.tag}", model.size) as on_bytes:
        pushed, outcome = dst.copy_from(src, model.tag, force=force, on_bytes=on_bytes)
    pushed = Model.of(pushed)
    _say(quiet, _outcome_line(pushed, outcome, f"pushed to {dst.url}", dst.url))
    _carry_aliases(src, dst, model.tag, quiet)
    return pushed


def pull(tag: str | Tag, *, force: bool = False, remote: str | None = None, quiet: bool = False) -> Model:
    """Copy a version from the remote into the local store (`latest` resolves against the remote)."""
    src, dst = remote_store(remote), default_store()
    model = src.get(tag)
    with _bar(quiet, f"Pulling {model.tag}", model.size) as on_bytes:
        pulled, outcome = dst.copy_from(src, model.tag, force=force, on_bytes=on_bytes)
    pulled = Model.of(pulled)
    _say(quiet, _outcome_line(pulled, outcome, f"pulled from {src.url}", dst.url))
    _carry_aliases(src, dst, model.tag, quiet)
    return pulled


def gc(*, remote: bool = False, older_than_s: float = 3600, dry_run: bool = False) -> builtins.list[dict]:
    """Find, and unless `dry_run` remove, what interrupted work left in the store (the remote's
    with `remote=True`): staging of processes that died or untouched for `older_than_s`, version
    folders that never committed, files of replaced generations, incomplete multipart uploads.
    None of it is visible to readers. Returns what was found: `what`, `where`, `size` each."""
    if older_than_s < 0:
        raise InvalidArgument(f"older_than_s must be >= 0, got {older_than_s}")
    store = remote_store() if remote else default_store()
    found = store_leftovers(store, older_than_s)
    if not remote:
        found += local_temp_leftovers()  # staging copies of writes to remote stores, on this host
    if not dry_run:
        sweep(found)
    return [{"what": f.what, "where": f.where, "size": f.size} for f in found]


def _carry_aliases(src: ModelStore, dst: ModelStore, tag: Tag, quiet: bool) -> None:
    """The aliases naming a copied version in `src` name it in `dst` too (moved there if they named another)."""
    names = src.aliases.of_version(tag.name, tag.version)
    for alias in names:
        dst.aliases.put(tag.name, alias, tag.version)
    if names:
        _say(quiet, f"aliases {', '.join(f'{tag.name}:{a}' for a in names)} -> {tag.version} in {dst.url}")


def _bar(quiet: bool, description: str, total_bytes: int):
    return progress_bar(description, total_bytes, enabled=False if quiet else None)


def _outcome_line(model: Model, outcome: Outcome, done: str, where: str) -> str:
    if outcome == "identical":
        return f"{model} is already in {where} with identical content; nothing to do"
    return f"{model} {done}"


def _size_of(path: str) -> int:
    try:
        fs, p = open_filesystem(path)
        return int(fs.size(p) or 0)
    except Exception:  # the import itself reports a missing or unreachable archive properly
        return 0


def _say(quiet: bool, line: str) -> None:
    if not quiet:
        print(line, file=sys.stderr)
