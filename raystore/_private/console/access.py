"""Who may change the store through the console.

- Reading (pages, downloads, verifying files) is open to whoever reaches the console.
- Writes (delete a version, set or remove an alias) are on by default only on a loopback address
  (127.0.0.1, ::1, localhost), where the console serves its own user. Elsewhere they need
  `--allow-writes` and a token (`RAYSTORE_UI_TOKEN`), which a browser gives once on `/login`
  (then an HttpOnly, SameSite=Strict cookie carries it) and a script as `Authorization: Bearer`.
  A token set on loopback is asked for there too.
- Every write is a POST from one of the console's own forms: it carries this process's form token
  (another site cannot read it), and a browser saying the request is cross-site is refused.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

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
        if not hmac.compare_digest(form_token.encode(), self.form_token.encode()):
            return 403, "refused: the form is out of date or not the console's own; reload the page and try again"
        if not self.signed_in(request):
            return 401, "sign in first: the console asks for its token (RAYSTORE_UI_TOKEN) on /login"
        return None


def _same_origin(request: Request) -> bool:
    """An `Origin` header, when the browser sends one, names this very host."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin != "null"
    return urlsplit(origin).netloc == request.headers.get("host", "")
