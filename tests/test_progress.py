"""Progress bars: drawn for large transfers on a terminal, absent otherwise."""

import io

from rich.console import Console

from raystore._private.store import progress


def test_no_bar_when_not_a_terminal_or_small():
    with progress.progress_bar("x", 10 << 30) as on_bytes:  # pytest's stderr is not a terminal
        assert on_bytes is None
    with progress.progress_bar("x", 10, enabled=None) as on_bytes:
        assert on_bytes is None


def test_bar_counts_bytes(monkeypatch):
    sink = io.StringIO()
    monkeypatch.setattr("rich.console.Console", lambda **kw: Console(file=sink, force_terminal=True, width=100))
    with progress.progress_bar("Pushing big:1", 100 << 20, enabled=True) as on_bytes:
        for _ in range(4):
            on_bytes(25 << 20)
    text = sink.getvalue()
    assert "Pushing big:1" in text and "104.9" in text  # 100 MiB shown in MB by rich
