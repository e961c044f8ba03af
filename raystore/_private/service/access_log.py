"""Request ids, and the access log of a service's ingress.

A request's id is its `X-Request-ID`: the client's, or the one Serve gave a request without one
(the id Serve's own logs use); Serve returns it in the response. When `raystore serve` asks for it
(`RAYSTORE_ACCESS_LOG=HOST:PORT` in the replicas' environment), the ingress sends one record per
request, and the traceback of each failure, as a JSON datagram to that address on loopback, where
`raystore serve` prints them on its console. A datagram costs the replica a few microseconds and
never blocks it; a lost one is a lost log line, never a failed request.
"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid

ACCESS_LOG_ENV = "RAYSTORE_ACCESS_LOG"
REQUEST_ID_KEY = "raystore.request_id"  # where the ASGI scope holds the request's id
_USABLE_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
MAX_DATAGRAM = 60_000


def request_id(header: str | None) -> str:
    """The request's id as the log shows it: as sent when it is short and printable, else escaped
    and cut to 128 characters (a log line stays one line, and still finds the request); a new id
    when there is none."""
    if not header:
        return uuid.uuid4().hex
    if _USABLE_ID.fullmatch(header):
        return header
    return header.encode("unicode_escape").decode("ascii")[:128]


class AccessLog:
    """Sends this replica's log records to `raystore serve`'s console."""

    def __init__(self, address: tuple[str, int]):
        self.address = address
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._socket.setblocking(False)

    def request(self, method: str, path: str, status: int, duration_s: float, rid: str) -> None:
        self._send(
            {
                "kind": "request",
                "method": method,
                "path": path,
                "status": status,
                "duration_ms": round(duration_s * 1000, 2),
                "request_id": rid,
            }
        )

    def failure(self, rid: str, traceback_text: str, *, api: str | None = None, request: str = "") -> None:
        """An API that failed (`api`), or a middleware that failed on `request` ("POST /path")."""
        record = {"kind": "failure", "api": api, "request": request, "request_id": rid, "traceback": traceback_text}
        self._send(record)

    def _send(self, record: dict) -> None:
        record["time"] = time.time()
        data = json.dumps(record).encode()
        if len(data) > MAX_DATAGRAM:  # a huge traceback: keep its end, where the error is
            record["traceback"] = "...\n" + record.get("traceback", "")[-(MAX_DATAGRAM // 2) :]
            data = json.dumps(record).encode()[:MAX_DATAGRAM]
        try:
            self._socket.sendto(data, self.address)
        except OSError:  # nobody listening any more, or the buffer is full: drop the line
            pass


def access_log_from_environment() -> AccessLog | None:
    """The access log `raystore serve` asked for, or None (deployed on a cluster, say)."""
    value = os.environ.get(ACCESS_LOG_ENV, "")
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        return None
    return AccessLog((host, int(port)))
