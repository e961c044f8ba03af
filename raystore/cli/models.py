"""`raystore models ...`: list, get and delete models in the store."""

from __future__ import annotations

from enum import Enum

import typer

from raystore import models
from raystore._private.runner.model import Model
from raystore._private.store import default_store, remote_store
from raystore.cli.output import Format, emit_data, emit_table, human_size, local_time
from raystore.exceptions import InvalidArgument, NotFound
from raystore.tag import Tag

app = typer.Typer(help="Manage models in the store.", no_args_is_help=True)


def _still_there(model: Model) -> bool:
    """False for a version deleted by someone else since it was listed."""
    try:
        return model.size >= 0  # reads the manifest
    except NotFound:
        return False


def _summary(model: Model, aliases: list[str]) -> dict:
    return {
        "tag": str(model.tag),
        "module": model.info.module,
        "size": model.size,
        "creation_time": model.info.creation_time.isoformat(),
        "labels": model.info.labels,
        "aliases": aliases,
    }


def _aliases_by_version(found: list[Model], remote: bool) -> dict[str, list[str]]:
    """NAME:VERSION -> the aliases naming it, read once per model name."""
    by_version: dict[str, list[str]] = {}
    for name in {m.tag.name for m in found}:
        for alias, version in sorted(models.aliases(name, remote=remote).items()):
            by_version.setdefault(f"{name}:{version}", []).append(alias)
    return by_version


@app.command("list")
def list_models(
    name: str | None = typer.Argument(None, help="Only versions of this model name."),
    output: Format = typer.Option(Format.table, "--output", "-o", help="table, json or yaml."),
    remote: bool = typer.Option(False, "--remote", help="List the remote (RAYSTORE_REMOTE) instead."),
) -> None:
    """List models, newest first."""
    found = [m for m in models.list(name, remote=remote) if _still_there(m)]
    aliases = _aliases_by_version(found, remote)
    if output is not Format.table:
        emit_data([_summary(m, aliases.get(str(m.tag), [])) for m in found], output)
        return
    if not found:
        where = remote_store().url if remote else default_store().url
        typer.echo(f"No models{' named ' + name if name else ''} in {where}")
        return
    rows = [
        [
            str(m.tag),
            ", ".join(aliases.get(str(m.tag), [])),
            m.info.module,
            human_size(m.size),
            local_time(m.info.creation_time),
        ]
        for m in found
    ]
    emit_table(["Tag", "Aliases", "Module", "Size", "Creation Time"], rows)


class GetFormat(str, Enum):
    yaml = "yaml"
    json = "json"
    path = "path"


@app.command("get")
def get_model(
    tag: str = typer.Argument(..., help="name, name:latest, name:VERSION or a version prefix."),
    output: GetFormat = typer.Option(GetFormat.yaml, "--output", "-o", help="yaml, json or path."),
) -> None:
    """Show one model's info."""
    model = models.get(tag)
    if output is GetFormat.path:
        typer.echo(model.path)
        return
    data = {
        "tag": str(model.tag),
        "path": model.path,
        "size": model.size,
        "aliases": model.aliases,
        **model.info.to_dict(),
    }
    emit_data(data, Format(output.value))


@app.command("delete")
def delete_models(
    tags: list[str] = typer.Argument(
        ..., help="name:VERSION deletes that version; a bare name (or name:latest) its newest version."
    ),
    all_versions: bool = typer.Option(False, "--all", help="Delete every version of each NAME given."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    remove_aliases: bool = typer.Option(
        False, "--remove-aliases", help="With -y: also delete versions that aliases name (and those aliases)."
    ),
) -> None:
    """Delete model versions: a tag means what it means everywhere, as in raystore.models.delete."""
    targets: list[tuple[str, list[Tag], list[str]]] = []  # (what the user typed, its versions, their aliases)
    for text in tags:
        tag = Tag.from_str(text)
        if all_versions:
            if not tag.is_latest:
                raise InvalidArgument(f"--all deletes every version of a name; give {tag.name}, not {text}")
            found = [m.tag for m in models.list(tag.name)]
            if not found:
                models.get(tag)  # raises NotFound with the usual message
        else:
            found = [models.get(tag).tag]
        named = list(default_store().aliases.naming(tag.name, {t.version for t in found}))
        if named and yes and not remove_aliases:  # checked for every tag before anything is deleted
            raise InvalidArgument(
                f"aliases name what {text} means ({', '.join(named)}): answer the prompt (no -y), or pass "
                "--remove-aliases with -y"
            )
        targets.append((text, found, named))
    for text, found, named in targets:
        what = f"all {len(found)} version(s) of {text}" if all_versions else str(found[0])
        if named:
            what += f" and the aliases naming {'them' if len(found) > 1 else 'it'} ({', '.join(named)})"
        if not yes and not typer.confirm(f"Delete {what}?", default=False):
            typer.echo(f"Skipped {text}")
            continue
        for tag in found:
            try:
                models.delete(tag, remove_aliases=True)
            except NotFound:
                typer.echo(f"{tag} was already deleted")
                continue
            typer.echo(f"Deleted {tag}")


@app.command("alias")
def alias_model(
    tag: str = typer.Argument(..., help="The version the alias names: name:VERSION (or a prefix, name, name:ALIAS)."),
    alias: str = typer.Argument(..., help="The alias: NAME:ALIAS then names that version everywhere."),
    remove: bool = typer.Option(False, "--remove", help="Remove the alias instead (TAG is then the model's name)."),
) -> None:
    """Set (or move, or with --remove remove) an alias: `raystore models alias iris_clf:1m90 prod`."""
    if remove:
        name = Tag.from_str(tag).name
        version = models.remove_alias(name, alias)
        typer.echo(f"Removed alias {name}:{alias} (it named {version})")
        return
    named = models.set_alias(tag, alias)
    typer.echo(f"{named.name}:{alias} -> {named.version}")


class Compression(str, Enum):
    gz = "gz"
    zstd = "zstd"


@app.command("export")
def export_model(
    tag: str = typer.Argument(..., help="The model to export."),
    dest: str = typer.Argument(".", help="A file, a folder, or a URL such as s3://bucket/prefix/."),
    compression: Compression | None = typer.Option(None, "--compression", help="gz or zstd (default: none)."),
    force: bool = typer.Option(False, "--force", "-f", help="Overwrite an archive that exists already."),
) -> None:
    """Export a model version as an archive (into an existing folder; an existing archive only with --force)."""
    models.export_model(tag, dest, compression=compression.value if compression else None, force=force)


_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def _bytes(text: str) -> int:
    """`500M`, `200G`, `1T`, `1048576` -> bytes."""
    unit = text[-1:].lower() if text[-1:].isalpha() else ""
    try:
        value = float(text[: len(text) - len(unit)]) * _SIZE_UNITS[unit]
    except (ValueError, KeyError):
        raise typer.BadParameter(f"{text!r} is not a size; use e.g. 500M, 200G or 1T") from None
    return int(value)


@app.command("import")
def import_model(
    src: str = typer.Argument(..., help="An archive file or URL."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace an existing version with different content."),
    max_size: str = typer.Option("200G", "--max-size", help="Refuse an archive declaring more (500M, 200G, 1T)."),
) -> None:
    """Import a model archive into the store."""
    models.import_model(src, force=force, max_size=_bytes(max_size))


@app.command("verify")
def verify_model(tag: str = typer.Argument(..., help="The model version to check.")) -> None:
    """Re-check a version's files against its manifest (size and sha256)."""
    model = models.verify(tag)
    typer.echo(f"{model} is intact: {len(model.manifest)} files, {human_size(model.size)}")


@app.command("push")
def push_model(
    tag: str = typer.Argument(..., help="The local model version to push."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace a remote version with different content."),
) -> None:
    """Copy a model version to the remote (RAYSTORE_REMOTE)."""
    models.push(tag, force=force)


@app.command("pull")
def pull_model(
    tag: str = typer.Argument(..., help="The remote model version to pull (latest resolves on the remote)."),
    force: bool = typer.Option(False, "--force", "-f", help="Replace a local version with different content."),
) -> None:
    """Copy a model version from the remote (RAYSTORE_REMOTE) into the local store."""
    models.pull(tag, force=force)


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _seconds(text: str) -> float:
    """`90`, `30s`, `15m`, `1h`, `2d` -> seconds."""
    unit = text[-1:].lower()
    number = text[:-1] if unit in _DURATION_UNITS else text
    try:
        value = float(number) * _DURATION_UNITS.get(unit, 1)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration; use e.g. 30m, 1h or 2d") from None
    if value < 0:
        raise typer.BadParameter(f"{text!r} is negative")
    return value


@app.command("gc")
def gc_store(
    remote: bool = typer.Option(False, "--remote", help="Clean the remote (RAYSTORE_REMOTE) instead."),
    older_than: str = typer.Option(
        "1h",
        "--older-than",
        help="Only what nobody wrote to for this long (30m, 1h, 2d); staging of dead processes always.",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Only list what would be removed."),
) -> None:
    """Remove what interrupted saves, imports, pushes and pulls left behind (never a committed version)."""
    found = models.gc(remote=remote, older_than_s=_seconds(older_than), dry_run=dry_run)
    where = remote_store().url if remote else default_store().url
    if not found:
        typer.echo(f"Nothing to clean in {where}")
        return
    emit_table(["What", "Where", "Size"], [[f["what"], f["where"], human_size(f["size"])] for f in found])
    total = human_size(sum(f["size"] for f in found))
    count = f"{len(found)} leftover{'' if len(found) == 1 else 's'}"
    typer.echo(f"{'Would remove' if dry_run else 'Removed'} {count} ({total}) from {where}")
