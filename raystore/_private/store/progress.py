"""Progress bars for long transfers: a rich bar on stderr when it is a terminal, silence otherwise."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from raystore._private.store.transfer import OnBytes

MIN_BYTES_FOR_BAR = 8 * 1024 * 1024  # small models finish before a bar is worth drawing


@contextmanager
def progress_bar(description: str, total_bytes: int, *, enabled: bool | None = None) -> Iterator[OnBytes | None]:
    """Yield a callback to report transferred bytes (or None when no bar is shown)."""
    if enabled is None:
        enabled = sys.stderr.isatty() and total_bytes >= MIN_BYTES_FOR_BAR
    if not enabled:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=Console(stderr=True), transient=True) as progress:
        task = progress.add_task(description, total=total_bytes)
        yield lambda n: progress.advance(task, n)
