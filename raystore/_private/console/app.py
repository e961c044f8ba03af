"""The console's web app (Starlette, Jinja2 templates, every asset inside the package): the models
of a store, a model's versions, one version, and versions compared side by side.

Pages are plain HTML rendered on the server; the little script there is (copying a tag) is inline.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from raystore._private.console.catalog import SORTS, Catalog, VersionRow, parse_label_filter
from raystore._private.console.compare import compare_versions
from raystore._private.store import ModelStore
from raystore.exceptions import InvalidArgument, NotFound, RaystoreError
from raystore.tag import Tag

HERE = Path(__file__).parent


def console_app(store: ModelStore, *, title: str = "raystore console") -> Starlette:
    """The console of `store`, read-only."""
    import jinja2

    catalog = Catalog(store)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value shown is the store's data, escaped
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["size"] = human_size
    environment.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M UTC")
    environment.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    environment.globals.update(title=title, store_url=store.url)

    def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = environment.get_template(template).render(root=root, **values)
        return HTMLResponse(page, status_code=status)

    async def models(request: Request) -> Response:
        params = request.query_params
        text, label_text, sort = (
            params.get("q", "").strip(),
            params.get("label", "").strip(),
            params.get("sort", "name"),
        )
        try:
            page = _positive(params.get("page", "1"), "page")
            labels = parse_label_filter(label_text)
            result = catalog.query(text, labels, sort, page)
        except InvalidArgument as exc:
            return render(request, "error.html", 400, message=str(exc))
        empty_store = result.total == 0 and not text and not labels
        return render(
            request,
            "models.html",
            page=result,
            q=text,
            label=label_text,
            sort=sort,
            sorts=SORTS,
            empty_store=empty_store,
        )

    async def model(request: Request) -> Response:
        name = request.path_params["name"]
        try:
            row = catalog.model(name)
        except RaystoreError as exc:
            return render(request, "error.html", 404, message=str(exc))
        aliases = _aliases_by_version(store, name)
        return render(request, "model.html", model=row, aliases=aliases)

    async def version(request: Request) -> Response:
        name, number = request.path_params["name"], request.path_params["version"]
        try:
            row = catalog.version(name, number)
            files = store.read_manifest(row.tag)
        except RaystoreError as exc:
            return render(request, "error.html", 404, message=str(exc))
        return render(
            request,
            "version.html",
            version=row,
            files=files,
            aliases=_aliases_by_version(store, name).get(number, []),
            loading=_loading_lines(row),
        )

    async def compare(request: Request) -> Response:
        tags = request.query_params.getlist("tag")
        if len(tags) < 2:
            return render(request, "error.html", 400, message="pick two versions or more to compare (tag=NAME:VERSION)")
        try:
            rows = [catalog.version(*_name_and_version(tag)) for tag in tags]
        except NotFound as exc:
            return render(request, "error.html", 404, message=str(exc))
        except InvalidArgument as exc:
            return render(request, "error.html", 400, message=str(exc))
        return render(request, "compare.html", versions=rows, table=compare_versions([r.info for r in rows]))

    routes = [
        Route("/", models),
        Route("/models/{name}", model),
        Route("/models/{name}/{version}", version),
        Route("/compare", compare),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
    ]
    return Starlette(routes=routes)


def _positive(text: str, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise InvalidArgument(f"{what} must be a whole number, got {text!r}") from None
    if value < 1:
        raise InvalidArgument(f"{what} must be >= 1, got {value}")
    return value


def _name_and_version(text: str) -> tuple[str, str]:
    tag = Tag.from_str(text)
    if tag.version is None or tag.is_latest:
        raise InvalidArgument(f"compare needs exact versions (NAME:VERSION), got {text!r}")
    return tag.name, tag.version


def _aliases_by_version(store: ModelStore, name: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for alias, version in sorted(store.aliases.of_name(name).items()):
        out.setdefault(version, []).append(alias)
    return out


def _loading_lines(row: VersionRow) -> dict[str, str]:
    """How to load this version: from Python with its framework's module, and from the CLI."""
    tag = str(row.tag)
    module = row.info.module.rsplit(".", 1)[-1]
    python = f'import raystore\nmodel = raystore.models.get("{tag}")'
    if module and module not in ("own_files",):
        python += f'\nobj = raystore.{module}.load_model("{tag}")'
    return {"python": python, "cli": f"raystore models get {tag}"}


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def python_version() -> str:
    return ".".join(map(str, sys.version_info[:3]))
