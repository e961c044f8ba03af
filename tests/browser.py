"""Real HTTP and a real browser for the tests of web pages: an ASGI app served by uvicorn in this
process, and headless Chromium (Debian's, through Playwright) that may reach that server only."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raystore._private.deploy.local import free_port

CHROMIUM = "/usr/bin/chromium"  # Debian's package; .ci/run installs it
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking"]


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """`app` on a free loopback port until the block ends; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the server never started"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@contextlib.contextmanager
def page_of(url: str) -> Iterator[tuple[Any, list[str]]]:
    """A headless Chromium page that may reach `url` and nothing else: yields (page, the URLs it
    was refused). Skips the test, saying how to install it, where Chromium is absent."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (Debian package chromium; .ci/run installs it)")
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    refused: list[str] = []

    def only_this_server(route: Any) -> None:
        if route.request.url.startswith(url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.route("**/*", only_this_server)
            yield page, refused
        finally:
            browser.close()
