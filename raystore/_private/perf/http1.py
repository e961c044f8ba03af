"""A lean HTTP/1.1 client for the load generator: one kept-alive connection per caller, each
request's bytes built once, and the answer read with no more parsing than its length needs
(Content-Length, or chunks). A general client (aiohttp) costs several times more CPU a request,
and on a small machine the load generator's CPU is the service's; `wrk` is the yardstick.
Plain `http://` only: `https://` targets go through aiohttp."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from raystore._private.perf.inputs import Body


class Http1Connection:
    """POSTs to one URL over one connection, reconnecting after the server closes it."""

    def __init__(self, url: str, timeout_s: float, requests: dict[int, bytes] | None = None):
        """`requests`: the request bytes by body, shared by a level's connections."""
        parts = urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.host_header = parts.netloc.rpartition("@")[2]  # never user:password
        self.timeout_s = timeout_s
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self._requests = requests if requests is not None else {}

    def request_bytes(self, body: Body) -> bytes:
        data = self._requests.get(id(body))
        if data is None:
            headers = "".join(f"{name}: {value}\r\n" for name, value in body.all_headers().items())
            head = (
                f"POST {self.target} HTTP/1.1\r\nHost: {self.host_header}\r\n{headers}"
                f"Content-Length: {len(body.data)}\r\nConnection: keep-alive\r\n\r\n"
            )
            data = self._requests[id(body)] = head.encode("latin-1") + body.data
        return data

    async def post(self, body: Body) -> int:
        """The status of one POST; -1 when the connection failed or timed out. A kept-alive
        connection the server closed meanwhile (its keep-alive timeout) is opened again once."""
        data = self.request_bytes(body)
        for attempt in (1, 2):
            reused = self.writer is not None
            try:
                return await asyncio.wait_for(self._post(data), self.timeout_s)
            except (asyncio.IncompleteReadError, ConnectionError) as exc:
                await self.close()
                stale = isinstance(exc, ConnectionError) or not exc.partial
                if not (reused and stale and attempt == 1):
                    return -1
            except (OSError, asyncio.LimitOverrunError, ValueError, TimeoutError):
                await self.close()
                return -1
        return -1

    async def _post(self, data: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        reader, writer = self.reader, self.writer
        writer.write(data)
        head = await reader.readuntil(b"\r\n\r\n")  # type: ignore[union-attr]
        status_line, _, header_block = head.partition(b"\r\n")
        status = int(status_line.split(b" ", 2)[1])
        length = None
        chunked = close = False
        for line in header_block.split(b"\r\n"):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                close = True
        if status in (204, 304) or 100 <= status < 200:
            pass  # no body, whatever the headers say
        elif chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)  # type: ignore[union-attr]
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # type: ignore[union-attr]
                        pass  # trailers, if any, up to the empty line
                    break
                await reader.readexactly(size + 2)  # type: ignore[union-attr]
        elif length is not None:
            await reader.readexactly(length)  # type: ignore[union-attr]
        else:
            await reader.read()  # type: ignore[union-attr]  # the body ends with the connection
            close = True
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        writer, self.reader, self.writer = self.writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
