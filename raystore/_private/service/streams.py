"""Streamed answers: an API that is an async generator answers piece by piece, each piece sent as it
is made, framed as its output descriptor's `stream=` says:

- `sse`: Server-Sent Events (`text/event-stream`), one `data:` event per piece (a piece with line
  breaks spans several `data:` lines, as the format wants); browsers' `EventSource` reads it;
- `jsonl`: JSON lines (`application/jsonl`), one JSON document per line;
- `text`: plain text, written as it comes (no framing: what `curl -N` shows).

The first piece is awaited before the response starts, so a request the API refuses at once (bad
input, an overloaded runner) still gets its error status. A failure after that cannot change the
status any more: it ends the stream with an error event (`event: error`, data `{"error": ...}`)
or line (`{"error": ...}`), and plain text just ends. A client that goes away closes the
generator, and through it the runner's stream: its batch lets it go at the next step.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from starlette.responses import StreamingResponse

from raystore._private.runner.served import remote_cause
from raystore._private.service.descriptors import STREAM_MEDIA_TYPES

if TYPE_CHECKING:
    from raystore._private.service.descriptors import IODescriptor

logger = logging.getLogger("raystore.service")

_LINE_BREAKS = re.compile(r"\r\n|\r|\n")  # what SSE takes for the end of a line
NOTHING = object()  # a stream that ended before its first piece

# Proxies and browsers must neither cache nor hold back an event stream.
_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def streamed_response(output: IODescriptor, first: Any, rest: AsyncIterator[Any], api_name: str) -> StreamingResponse:
    """The response that sends `first` (or nothing, when it is `NOTHING`) then every piece of
    `rest`, framed as `output.stream` says."""
    framing = output.stream
    assert framing is not None

    def frame(piece: Any) -> bytes:
        text = output.piece(piece)
        if framing == "sse":
            return ("".join(f"data: {line}\n" for line in _LINE_BREAKS.split(text)) + "\n").encode()
        if framing == "jsonl":
            return (text + "\n").encode()
        return text.encode()

    head = b"" if first is NOTHING else frame(first)  # a first piece it cannot render is a plain error

    async def body() -> AsyncIterator[bytes]:
        try:
            if head:
                yield head
            async for piece in rest:
                yield frame(piece)
        except Exception as exc:
            cause = remote_cause(exc)
            logger.warning("API %s: the stream failed after it started: %s: %s", api_name, type(cause).__name__, cause)
            error = json.dumps({"error": f"{type(cause).__name__}: {cause}"})
            if framing == "sse":
                yield f"event: error\ndata: {error}\n\n".encode()
            elif framing == "jsonl":
                yield (error + "\n").encode()
        finally:
            aclose = getattr(rest, "aclose", None)
            if aclose is not None:
                await aclose()

    return StreamingResponse(body(), media_type=STREAM_MEDIA_TYPES[framing], headers=_HEADERS)
