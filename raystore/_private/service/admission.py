"""What an ingress replica lets in: how long a request body may take to arrive, how many body bytes
the replica holds at once, and which APIs shed load before reading a body.

- **Slow clients.** A body must arrive within `body_timeout_s`, a deadline that every byte received
  extends by `1 / min_body_rate` seconds (the rule of Apache's mod_reqtimeout). A client that
  dribbles a few bytes every few seconds loses its slot after `body_timeout_s` with a 408 instead
  of holding it for as long as it likes, while a slow but steady upload of a large file goes on.
- **Bytes in flight.** A request's body counts against `max_body_bytes_in_flight` as it arrives
  and until its answer is ready, since the parsed value (several times the body's size) lives that
  long. A request whose declared body would not fit beside what is held is answered 503 before
  its body is read (Serve's proxy may already have sent the replica some of it: what is bounded is
  what the service reads and parses); a body alone always fits (up to `max_body_bytes`, which the
  service enforces first), and a body that stops fitting while it arrives (others came in
  meanwhile, or it declared no length) is cut with a 503 there.
- **Backpressure.** When a runner's batch queue turns a request of an API away (`QueueFull`: 503
  with a retry hint), the API answers 503 to new requests before reading their bodies until the
  hint has passed: parsing them would cost memory and CPU only to be turned away by the same
  queue. Which runner a request will reach is known only once the API function runs, so the
  queue's own word, the last 503, is what the ingress goes by.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from starlette.requests import ClientDisconnect, Request

from raystore.exceptions import BadInput, InvalidArgument, PayloadTooLarge, RequestTimeout, ServiceUnavailable

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
DEFAULT_BODY_TIMEOUT_S = 10.0
DEFAULT_MIN_BODY_RATE = 16 * 1024  # bytes/s: a 128 kbit/s link still uploads whatever it sends
DEFAULT_MAX_BODY_BYTES_IN_FLIGHT = 64 * 1024 * 1024
# The longest an API sheds on a runner's word: a hint is for one queue, and other replicas of the
# runner may have room again sooner.
MAX_SHED_S = 1.0


@dataclass(frozen=True)
class BodyLimits:
    """A service's limits on request bodies, checked once when the service is defined."""

    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S
    min_body_rate: float = DEFAULT_MIN_BODY_RATE
    max_body_bytes_in_flight: int | None = None  # None: the default, or max_body_bytes if larger

    def __post_init__(self) -> None:
        if not isinstance(self.max_body_bytes, int) or isinstance(self.max_body_bytes, bool) or self.max_body_bytes < 1:
            raise InvalidArgument(f"max_body_bytes must be a positive int, got {self.max_body_bytes!r}")
        for name in ("body_timeout_s", "min_body_rate"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise InvalidArgument(f"{name} must be a positive number, got {value!r}")
        in_flight = self.max_body_bytes_in_flight
        if in_flight is None:
            object.__setattr__(
                self, "max_body_bytes_in_flight", max(DEFAULT_MAX_BODY_BYTES_IN_FLIGHT, self.max_body_bytes)
            )
        elif not isinstance(in_flight, int) or isinstance(in_flight, bool) or in_flight < self.max_body_bytes:
            raise InvalidArgument(
                f"max_body_bytes_in_flight must be an int of at least max_body_bytes ({self.max_body_bytes}), "
                f"got {in_flight!r}"
            )


class Admission:
    """One ingress replica's gate for request bodies (see the module's docstring)."""

    def __init__(self, limits: BodyLimits):
        self.limits = limits
        self.bytes_in_flight = 0
        self._shed_until: dict[str, float] = {}  # API name -> monotonic time its shedding ends
        self._deadlines = _Deadlines()

    async def read(self, request: Request, api_name: str) -> tuple[bytes, int]:
        """(the request's body, the bytes it holds in flight): read within the limits. The caller
        gives the count back with `release` once the answer is ready."""
        until = self._shed_until.get(api_name)
        if until is not None:
            left = until - time.monotonic()
            if left > 0:
                raise ServiceUnavailable(
                    f"API {api_name!r} is shedding load: its runner's queue turned a request away and asked "
                    f"for {left:.2f} s more; add replicas or raise max_latency_ms if this persists",
                    retry_after_s=left,
                )
            del self._shed_until[api_name]
        declared = _declared_length(request)
        if declared is not None:
            if declared > self.limits.max_body_bytes:
                raise PayloadTooLarge(
                    f"the body is {declared} bytes; this service accepts at most {self.limits.max_body_bytes}"
                )
            self._check_fits(declared)  # before a byte is read
        return await self._read(request, declared)

    def release(self, reserved: int) -> None:
        self.bytes_in_flight -= reserved

    def note_overloaded(self, api_name: str, retry_after_s: float) -> None:
        """A runner turned a request of this API away: shed its next ones until the hint has passed."""
        self._shed_until[api_name] = time.monotonic() + min(max(retry_after_s, 0.0), MAX_SHED_S)

    def _check_fits(self, size: int) -> None:
        limit = self.limits.max_body_bytes_in_flight
        if self.bytes_in_flight and self.bytes_in_flight + size > limit:
            raise ServiceUnavailable(
                f"this replica holds {self.bytes_in_flight} bytes of request bodies being served and a body of "
                f"{size} more would pass max_body_bytes_in_flight={limit}; add ingress replicas or send smaller "
                "requests",
                retry_after_s=1.0,
            )

    def _reserve(self, size: int) -> None:
        self._check_fits(size)
        self.bytes_in_flight += size

    async def _read(self, request: Request, declared: int | None) -> tuple[bytes, int]:
        """(body, bytes reserved for it here): read before the deadline, reserved chunk by chunk as
        it arrives, and given back here if it fails part-way."""
        limits = self.limits
        most = declared if declared is not None else limits.max_body_bytes
        chunks: list[bytes] = []
        received = reserved = 0
        started = time.monotonic()
        task = self._deadlines.watch(started + limits.body_timeout_s)
        try:
            while True:
                message = await request.receive()
                if message["type"] == "http.disconnect":
                    raise ClientDisconnect()
                chunk = message.get("body", b"")
                if chunk:
                    received += len(chunk)
                    if received > most:
                        what = "its Content-Length" if declared is not None else "the most this service accepts"
                        raise PayloadTooLarge(f"the body is over {most} bytes, {what}")
                    # Counted as they arrive, not as declared: a slow upload holds only what it sent.
                    self._reserve(len(chunk))
                    reserved += len(chunk)
                    chunks.append(chunk)
                if not message.get("more_body", False):
                    break
                # Each byte buys 1 / min_body_rate seconds more (the first body_timeout_s are free).
                self._deadlines.extend(task, started + limits.body_timeout_s + received / limits.min_body_rate)
        except BaseException as exc:
            self.release(reserved)
            if isinstance(exc, asyncio.CancelledError) and self._deadlines.expired(task):
                raise RequestTimeout(
                    f"the body did not arrive in time: {received} of {declared if declared is not None else 'unknown'}"
                    f" bytes after {time.monotonic() - started:.1f} s (a body has {limits.body_timeout_s:g} s, and 1 s "
                    f"more per {limits.min_body_rate:g} bytes received); send it in one go or faster"
                ) from None
            raise
        finally:
            self._deadlines.forget(task)
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)  # one chunk, the usual: no copy
        request._body = body  # later readers (request.form() for multipart) parse what was read here
        return body, reserved


class _Deadlines:
    """The deadlines of the bodies being read in one replica, enforced by one watchdog task that
    looks every `TICK_S` while reads are going on and cancels those past theirs. A timer per
    request (`asyncio.timeout`) would cost about 5 us on every request; this costs a dict entry,
    and a deadline is kept to within a tick."""

    TICK_S = 0.25

    def __init__(self) -> None:
        self._due: dict[asyncio.Task, float] = {}
        self._expired: set[asyncio.Task] = set()
        self._watchdog: asyncio.Task | None = None

    def watch(self, deadline: float) -> asyncio.Task:
        task = asyncio.current_task()
        assert task is not None  # an endpoint runs in a task
        self._due[task] = deadline
        watchdog = self._watchdog
        if watchdog is None or watchdog.done() or watchdog.get_loop() is not task.get_loop():
            self._watchdog = task.get_loop().create_task(self._watch())  # one replica, one loop
        return task

    def extend(self, task: asyncio.Task, deadline: float) -> None:
        self._due[task] = deadline

    def forget(self, task: asyncio.Task) -> None:
        self._due.pop(task, None)
        # A read that ended just as it was cancelled (its last chunk already in) still gets the
        # cancellation at its next await: late is late, and nothing is kept for it here.
        self._expired.discard(task)

    def expired(self, task: asyncio.Task) -> bool:
        """Whether the watchdog cancelled `task`; if so, the cancellation is taken back (the read
        ends with a 408 instead)."""
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    async def _watch(self) -> None:
        """Until no body is being read: then it ends, and the next read starts another."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.TICK_S)
            now = time.monotonic()
            mine = [(t, d) for t, d in self._due.items() if t.get_loop() is loop]  # a task is its loop's
            if not mine:
                self._watchdog = None
                return
            for task, deadline in mine:
                if deadline < now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()


def _declared_length(request: Request) -> int | None:
    declared = request.headers.get("content-length")
    if declared is None:
        return None
    declared = declared.strip()
    if not (declared.isascii() and declared.isdigit()):
        raise BadInput(f"Content-Length {declared!r} is not a number of bytes")
    return int(declared)
