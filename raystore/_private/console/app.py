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
import queue
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from raystore._private.console.access import READ_ONLY, TOKEN_COOKIE, LoopbackHostsOnly, WriteAccess
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
    only_models: Collection[str] | None = None,
    files: bool = True,
    loopback_only: bool = False,
) -> Starlette:
    """The console of `store`; read-only unless `access` allows writes.

    For the console a service mounts at `/ui`: `service` is (its name, a function giving its
    status as `service.status` makes it), for a page of its runners and their live batch
    statistics; `only_models` limits the console to those model names (the service's own), and
    `files=False` leaves out downloads and verification (a service's clients need neither).
    `loopback_only`: answer only requests naming a loopback host (a console listening on one).
    """
    import jinja2

    access = access or WriteAccess(writes=False)
    catalog = Catalog(store, only=only_models)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every value shown is the store's data, escaped
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["size"] = human_size
    environment.filters["when"] = lambda t: t.strftime("%Y-%m-%d %H:%M UTC")
    environment.globals.update(
        title=title,
        store_url=store.url,
        writes=access.writes,
        file_actions=files,
        form_token=access.form_token,
        service_name=service[0] if service else None,
    )

    def render(request: Request, template: str, status: int = 200, **values: Any) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        signed_in = access.signed_in(request)
        here = request.scope["path"][len(root) :] or "/"
        page = environment.get_template(template).render(
            root=root, here=here, signed_in=signed_in, needs_login=access.writes and not signed_in, **values
        )
        return HTMLResponse(page, status_code=status)

    def failed(request: Request, status: int, message: str) -> HTMLResponse:
        return render(request, "error.html", status, message=message)

    def failed_with(request: Request, exc: RaystoreError) -> HTMLResponse:
        return failed(request, 404 if isinstance(exc, NotFound) else 400, str(exc))

    def back_to(request: Request, path: str) -> RedirectResponse:
        return RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)

    async def write_form(request: Request) -> tuple[dict[str, str], HTMLResponse | None]:
        """The POSTed form, and the refusal to answer with when the write may not happen. A
        read-only console refuses before reading the body, and no body is read past its limit."""
        if not access.writes:
            return {}, failed(request, 403, READ_ONLY)
        body = await _read_form(request)
        if body is None:
            return {}, failed(request, 413, f"the form is over {MAX_FORM_BYTES} bytes")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}
        refusal = access.refusal(request, form.get("form_token", ""))
        return form, None if refusal is None else failed(request, *refusal)

    # The store is read on a worker thread: in a service, this app shares the replica's event
    # loop with its APIs, and a store on object storage answers in round trips.

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
            result = await asyncio.to_thread(catalog.query, text, labels, sort, page)
        except InvalidArgument as exc:
            return failed(request, 400, str(exc))
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

        def read() -> tuple[Any, dict[str, list[str]]]:
            return catalog.model(name), _aliases_by_version(store, name)

        try:
            row, aliases = await asyncio.to_thread(read)
        except RaystoreError as exc:
            return failed(request, 404, str(exc))
        return render(request, "model.html", model=row, aliases=aliases)

    async def version(request: Request) -> Response:
        name, number = request.path_params["name"], request.path_params["version"]

        def read() -> tuple[VersionRow, Any, list[str]]:
            row = catalog.version(name, number)
            return row, store.read_manifest(row.tag), _aliases_by_version(store, name).get(number, [])

        try:
            row, manifest, aliases = await asyncio.to_thread(read)
        except RaystoreError as exc:
            return failed(request, 404, str(exc))
        return render(
            request, "version.html", version=row, files=manifest, aliases=aliases, loading=_loading_lines(row)
        )

    async def compare(request: Request) -> Response:
        tags = request.query_params.getlist("tag")
        if len(tags) < 2:
            return failed(request, 400, "pick two versions or more to compare (tag=NAME:VERSION)")
        try:
            pairs = [_name_and_version(tag) for tag in tags]
            rows = await asyncio.to_thread(lambda: [catalog.version(*pair) for pair in pairs])
        except RaystoreError as exc:
            return failed_with(request, exc)
        return render(request, "compare.html", versions=rows, table=compare_versions([r.info for r in rows]))

    async def download(request: Request) -> Response:
        if not files:
            return failed(
                request, 404, "downloads are off in a service's console: use `raystore ui` where the store is"
            )
        name, number = request.path_params["name"], request.path_params["version"]
        try:
            row = await asyncio.to_thread(catalog.version, name, number)  # an exact version, one shown here
            stored = await asyncio.to_thread(store.get, row.tag)
        except RaystoreError as exc:
            return failed(request, 404, str(exc))
        filename = archive.archive_name(stored.tag, None)
        return StreamingResponse(
            _archive_chunks(stored),
            media_type="application/x-tar",
            headers={"Content-Disposition": f'attachment; filename="{filename}"'},
        )

    async def verify(request: Request) -> Response:
        if not files:
            return failed(request, 404, "verifying is off in a service's console: use `raystore ui` where the store is")
        name, number = request.path_params["name"], request.path_params["version"]
        try:
            row = await asyncio.to_thread(catalog.version, name, number)
            stored = await asyncio.to_thread(store.verify, row.tag)
        except StoreError as exc:
            return render(request, "verified.html", tag=f"{name}:{number}", problems=str(exc))
        except RaystoreError as exc:
            return failed(request, 404, str(exc))
        return render(request, "verified.html", tag=str(stored.tag), problems=None, files=len(stored.manifest))

    async def delete_page(request: Request) -> Response:
        name, number = request.path_params["name"], request.path_params["version"]
        if not access.writes:
            return failed(request, 403, READ_ONLY)
        try:
            row = await asyncio.to_thread(catalog.version, name, number)
            aliases = await asyncio.to_thread(lambda: _aliases_by_version(store, name).get(number, []))
        except RaystoreError as exc:
            return failed(request, 404, str(exc))
        return render(request, "delete.html", version=row, aliases=aliases)

    async def delete(request: Request) -> Response:
        name, number = request.path_params["name"], request.path_params["version"]
        form, refused = await write_form(request)
        if refused is not None:
            return refused

        def run() -> bool:
            row = catalog.version(name, number)  # exactly this version: never `latest`, an alias or a prefix
            store.delete(row.tag, remove_aliases=form.get("remove_aliases") == "yes")
            try:
                return bool(catalog.model(name).versions)
            except RaystoreError:
                return False

        try:
            others_left = await asyncio.to_thread(run)
        except NotFound as exc:
            return failed(request, 404, str(exc))
        except RaystoreError as exc:
            return failed(request, 409, str(exc))
        return back_to(request, f"/models/{name}" if others_left else "/")

    async def set_alias(request: Request) -> Response:
        name = request.path_params["name"]
        form, refused = await write_form(request)
        if refused is not None:
            return refused
        number, alias = form.get("version", ""), form.get("alias", "").strip()

        def run() -> None:
            row = catalog.version(name, number)
            store.set_alias(row.tag, alias)

        try:
            await asyncio.to_thread(run)
        except RaystoreError as exc:
            return failed_with(request, exc)
        return back_to(request, f"/models/{name}/{number}")

    async def remove_alias(request: Request) -> Response:
        name, alias = request.path_params["name"], request.path_params["alias"]
        _, refused = await write_form(request)
        if refused is not None:
            return refused
        try:
            number = await asyncio.to_thread(store.remove_alias, name, alias)
        except RaystoreError as exc:
            return failed_with(request, exc)
        return back_to(request, f"/models/{name}/{number}")

    async def login_page(request: Request) -> Response:
        return render(request, "login.html", next=request.query_params.get("next", "/"), error=None)

    async def login(request: Request) -> Response:
        if not access.writes or access.token is None:
            return failed(
                request,
                404,
                "this console has no sign-in: " + (READ_ONLY if not access.writes else "writes need no token"),
            )
        body = await _read_form(request)
        if body is None:
            return failed(request, 413, f"the form is over {MAX_FORM_BYTES} bytes")
        form = {k: v[-1] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items()}
        target = form.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"  # only paths of this console: never a redirect to another site
        refusal = access.refusal(request, form.get("form_token", ""))
        if refusal is not None and refusal[0] != 401:
            return failed(request, *refusal)
        token = form.get("token", "")
        if not hmac.compare_digest(token.encode(), access.token.encode()):
            return render(request, "login.html", 401, next=target, error="that is not the console's token")
        response = back_to(request, target)
        root = request.scope.get("root_path", "") or "/"
        secure = request.url.scheme == "https"
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="strict", path=root, secure=secure)
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
    middleware = [Middleware(LoopbackHostsOnly)] if loopback_only else []
    return Starlette(routes=routes, middleware=middleware)


async def _read_form(request: Request) -> bytes | None:
    """The request body, or None once it passes `MAX_FORM_BYTES` (not read further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    return bytes(body)


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
    chunks: queue.Queue = queue.Queue(maxsize=4)  # at most a few MiB in flight
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

    def next_item() -> object:
        # a bounded wait: a download abandoned meanwhile frees this worker thread within 0.5 s
        while not gone.is_set():
            try:
                return chunks.get(timeout=0.5)
            except queue.Empty:
                continue
        return done

    threading.Thread(target=produce, name="raystore-ui-download", daemon=True).start()
    try:
        while True:
            item = await asyncio.to_thread(next_item)
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
