"""Who may change the store through the console.

- Reading (pages, downloads, verifying files) is open to whoever reaches the console.
- Writes (delete a version, set or remove an alias) are on by default only on a loopback address
  (127.0.0.1, ::1, localhost), where the console serves its own user. Elsewhere they need
  `--allow-writes` and a token (`RAYSTORE_UI_TOKEN`), which a browser gives once on `/login`
  (then an HttpOnly, SameSite=Strict cookie carries it) and a script as `Authorization: Bearer`.
  A token set on loopback is asked for there too.
- Every write from a browser is a POST from one of the console's own forms: it carries this
  process's form token (another site cannot read it), and a browser saying the request is
  cross-site is refused. A script that sends the token as `Authorization: Bearer` needs no form
  token: a browser never adds that header by itself.
- On a loopback address the console answers only requests naming a loopback host: a web page
  whose own name was made to point at 127.0.0.1 (DNS rebinding) reads nothing.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from raystore.exceptions import InvalidArgument

TOKEN_COOKIE = "raystore_ui_token"
READ_ONLY = (
    "this console is read-only: start it with `raystore ui --allow-writes` (with RAYSTORE_UI_TOKEN set when it "
    "listens beyond 127.0.0.1)"
)
LOOPBACK = ("127.0.0.1", "::1", "localhost")


class WriteAccess:
    def __init__(self, *, writes: bool, token: str | None = None):
        self.writes = writes
        self.token = token or None
        self.form_token = secrets.token_urlsafe(32)  # in every form this process renders

    @classmethod
    def for_host(cls, host: str, *, allow_writes: bool | None, token: str | None) -> WriteAccess:
        """The access a console listening on `host` gets: `allow_writes` None means on loopback only."""
        loopback = host in LOOPBACK
        writes = loopback if allow_writes is None else allow_writes
        if writes and not loopback and not token:
            raise InvalidArgument(
                f"--allow-writes on {host} lets anyone who reaches it delete models: set RAYSTORE_UI_TOKEN to a "
                "secret first (the console asks for it on /login), or listen on 127.0.0.1"
            )
        return cls(writes=writes, token=token)

    def bearer(self, request: Request) -> bool:
        """Whether the request carries the token as `Authorization: Bearer` (a script's)."""
        authorization = request.headers.get("authorization", "")
        if self.token is None or not authorization.lower().startswith("bearer "):
            return False
        return hmac.compare_digest(authorization[7:].strip().encode(), self.token.encode())

    def signed_in(self, request: Request) -> bool:
        """Whether the request carries the token (always true when there is none to carry)."""
        if self.token is None:
            return True
        supplied = request.cookies.get(TOKEN_COOKIE, "")
        authorization = request.headers.get("authorization", "")
        if authorization.lower().startswith("bearer "):
            supplied = authorization[7:].strip()
        return hmac.compare_digest(supplied.encode(), self.token.encode())

    def refusal(self, request: Request, form_token: str) -> tuple[int, str] | None:
        """Why a write is refused, as (status, message), or None to let it through."""
        if not self.writes:
            return 403, READ_ONLY
        if request.headers.get("sec-fetch-site") == "cross-site" or not _same_origin(request):
            return 403, "refused: the request came from another site"
        if self.bearer(request):
            return None
        if not hmac.compare_digest(form_token.encode(), self.form_token.encode()):
            return 403, "refused: the form is out of date or not the console's own; reload the page and try again"
        if not self.signed_in(request):
            return 401, "sign in first: the console asks for its token (RAYSTORE_UI_TOKEN) on /login"
        return None


class LoopbackHostsOnly:
    """Answers only requests whose `Host` is a loopback name (for a console listening on one)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if name.strip("[]") not in LOOPBACK:
                response = PlainTextResponse(f"this console answers to 127.0.0.1 or localhost, not {host!r}", 421)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _same_origin(request: Request) -> bool:
    """An `Origin` header, when the browser sends one, names this very host."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    return urlsplit(origin).netloc == request.headers.get("host", "")
