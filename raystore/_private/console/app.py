"""The console's web app (Starlette, Jinja2 templates, every asset inside the package): the models
of a store, a model's versions, one version, and versions compared side by side; a version's
archive to download and its files to verify; and, where `WriteAccess` allows, deleting a version
and setting or removing aliases.

Pages are plain HTML rendered on the server, and forms plain POSTs; the little script there is
(copying a tag) is inline.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from raystore._private.console.access import READ_ONLY, TOKEN_COOKIE, WriteAccess
from raystore._private.console.catalog import SORTS, Catalog, VersionRow, parse_label_filter
from raystore._private.console.compare import compare_versions
from raystore._private.store import ModelStore, StoredModel, archive
from raystore.exceptions import InvalidArgument, NotFound, RaystoreError, StoreError
from raystore.tag import Tag

HERE = Path(__file__).parent
MAX_FORM_BYTES = 64 * 1024


def console_app(
    store: ModelStore,
    *,
    access: WriteAccess | None = None,
    title: str = "raystore console",
    service: tuple[str, Callable[[], Awaitable[dict[str, Any]]]] | None = None,
) -> Starlette:
    """The console of `store`; read-only unless `access` allows writes. `service`: (its name, a
    function giving its status as `service.status` makes it), for the console a service mounts
    at `/ui`: a page of its runners, their models and live batch statistics."""
    import jinja2

    access = access or WriteAccess(writes=False)
    catalog = Catalog(store)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value shown is the store's data, escaped
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["size"] = human_size
    environment.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M UTC")
    environment.filters["pretty"] = lambda v: json.dumps(v, indent=2, sort_keys=True, default=str)
    environment.globals.update(
        title=title,
        store_url=store.url,
        writes=access.writes,
        form_token=access.form_token,
        service_name=service[0] if service else None,
    )

    def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        signed_in = access.signed_in(request)
        page = environment.get_template(template).render(
            root=root, signed_in=signed_in, needs_login=access.writes and not signed_in, **values
        )
        return HTMLResponse(page, status_code=status)

    def failed(request: Request, status: int, message: str) -> HTMLResponse:
        return render(request, "error.html", status, message=message)

    def back_to(request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)

    async def write_form(request: Request) -> tuple[dict[str, str], HTMLResponse | None]:
        """The POSTed form, and the refusal to answer with when the write may not happen."""
        body = await request.body()
        if len(body) > MAX_FORM_BYTES:
            return {}, failed(request, 413, f"the form is over {MAX_FORM_BYTES} bytes")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}
        refusal = access.refusal(request, form.get("form_token", ""))
        return form, None if refusal is None else failed(request, *refusal)

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

    async def download(request: Request) -> Response:
        try:
            stored = store.get(f"{request.path_params['name']}:{request.path_params['version']}")
        except RaystoreError as exc:
            return failed(request, 404, str(exc))
        filename = archive.archive_name(stored.tag, None)
        return StreamingResponse(
            _archive_chunks(stored),
            media_type="application/x-tar",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def verify(request: Request) -> Response:
        tag = f"{request.path_params['name']}:{request.path_params['version']}"
        try:
            stored = await asyncio.to_thread(store.verify, tag)
        except StoreError as exc:
            return render(request, "verified.html", 200, tag=tag, problems=str(exc))
        except RaystoreError as exc:
            return failed(request, 404, str(exc))
        return render(request, "verified.html", tag=str(stored.tag), problems=None, files=len(stored.manifest))

    async def delete_page(request: Request) -> Response:
        name, number = request.path_params["name"], request.path_params["version"]
        if not access.writes:
            return failed(request, 403, READ_ONLY)
        try:
            row = catalog.version(name, number)
        except RaystoreError as exc:
            return failed(request, 404, str(exc))
        aliases = _aliases_by_version(store, name).get(number, [])
        return render(request, "delete.html", version=row, aliases=aliases)

    async def delete(request: Request) -> Response:
        name, number = request.path_params["name"], request.path_params["version"]
        form, refused = await write_form(request)
        if refused is not None:
            return refused
        try:
            await asyncio.to_thread(
                store.delete, f"{name}:{number}", remove_aliases=form.get("remove_aliases") == "yes"
            )
        except NotFound as exc:
            return failed(request, 404, str(exc))
        except RaystoreError as exc:
            return failed(request, 409, str(exc))
        left = store.version_names(name)
        return back_to(request, f"/models/{name}" if any(store.read_info(name, v) for v in left) else "/")

    async def set_alias(request: Request) -> Response:
        name = request.path_params["name"]
        form, refused = await write_form(request)
        if refused is not None:
            return refused
        number, alias = form.get("version", ""), form.get("alias", "").strip()
        try:
            await asyncio.to_thread(store.set_alias, f"{name}:{number}", alias)
        except NotFound as exc:
            return failed(request, 404, str(exc))
        except RaystoreError as exc:
            return failed(request, 400, str(exc))
        return back_to(request, f"/models/{name}/{number}")

    async def remove_alias(request: Request) -> Response:
        name, alias = request.path_params["name"], request.path_params["alias"]
        _, refused = await write_form(request)
        if refused is not None:
            return refused
        try:
            number = await asyncio.to_thread(store.remove_alias, name, alias)
        except NotFound as exc:
            return failed(request, 404, str(exc))
        except RaystoreError as exc:
            return failed(request, 400, str(exc))
        return back_to(request, f"/models/{name}/{number}")

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", next=request.query_params.get("next", "/"), error=None)

    async def login(request: Request) -> Response:
        body = await request.body()
        form = {k: v[-1] for k, v in parse_qs(body[:MAX_FORM_BYTES].decode("utf-8", errors="replace")).items()}
        target = form.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # only paths of this console: never a redirect to another site
        refusal = access.refusal(request, form.get("form_token", ""))
        if refusal is not None and refusal[0] != 401:
            return failed(request, *refusal)
        token = form.get("token", "")
        if access.token is None or not hmac.compare_digest(token.encode(), access.token.encode()):
            return render(request, "login.html", 401, next=target, error="that is not the console's token")
        response = back_to(request, target)
        root = request.scope.get("root_path", "") or "/"
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path=root)
        return response

    async def service_page(request: Request) -> Response:
        if service is None:
            return failed(request, 404, "this console runs on its own, not in a service")
        return render(request, "service.html", state=await service[1]())

    async def service_json(request: Request) -> Response:
        if service is None:
            return failed(request, 404, "this console runs on its own, not in a service")
        return JSONResponse(await service[1]())

    routes = [
        Route("/", models),
        Route("/service", service_page),
        Route("/service.json", service_json),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/models/{name}", model),
        Route("/models/{name}/aliases", set_alias, methods=["POST"]),
        Route("/models/{name}/aliases/{alias}/remove", remove_alias, methods=["POST"]),
        Route("/models/{name}/{version}", version),
        Route("/models/{name}/{version}/download", download),
        Route("/models/{name}/{version}/verify", verify),
        Route("/models/{name}/{version}/delete", delete_page, methods=["GET"]),
        Route("/models/{name}/{version}/delete", delete, methods=["POST"]),
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


async def _archive_chunks(model: StoredModel) -> AsyncIterator[bytes]:
    """`model`'s archive as it is written, by a thread of its own into a short queue: memory stays
    flat whatever the model's size, and a client that goes away stops the writing."""
    chunks: queue.Queue = queue.Queue(maxsize=16)
    gone = threading.Event()
    done = object()

    class Pipe:
        def write(self, data: bytes) -> int:
            while not gone.is_set():
                try:
                    chunks.put(bytes(data), timeout=0.5)
                    return len(data)
                except queue.Full:
                    continue
            raise BrokenPipeError("the download was abandoned")

    def produce() -> None:
        try:
            archive.write_archive(model, Pipe())  # type: ignore[arg-type]
            outcome: object = done
        except BaseException as exc:  # handed to the response, which ends the download with it
            outcome = exc
        while not gone.is_set():
            try:
                chunks.put(outcome, timeout=0.5)
                return
            except queue.Full:
                continue

    threading.Thread(target=produce, name="raystore-ui-download", daemon=True).start()
    try:
        while True:
            item = await asyncio.to_thread(chunks.get)
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        gone.set()


def human_size(size: int | None) -> str:
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover
