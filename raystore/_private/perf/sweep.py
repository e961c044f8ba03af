"""A sweep: the target checked with one request, then each load level measured in turn by the load
generator's process, until its windows agree or `max_windows` have passed."""

from __future__ import annotations

import contextlib
import http.client
import multiprocessing
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor

from raystore._private.perf import service_stats
from raystore._private.perf.inputs import Body
from raystore._private.perf.load import measure_level
from raystore._private.perf.windows import Level, Window
from raystore.exceptions import InvalidArgument


def probe(url: str, body: Body, timeout_s: float = 30.0) -> None:
    """One request before measuring: a target that cannot be reached, or that refuses the input,
    is an error saying so, not a sweep of failures."""
    if not url.startswith(("http://", "https://")):
        raise InvalidArgument(f"the target must be an http:// or https:// URL of an API, got {url!r}")
    request = urllib.request.Request(url, data=body.data, headers=body.all_headers(), method="POST")
    try:
        with _NO_REDIRECTS.open(request, timeout=timeout_s) as response:
            response.read()
    except urllib.error.HTTPError as err:
        if 300 <= err.code < 400:
            raise InvalidArgument(
                f"{url} answered {err.code}, a redirect to {err.headers.get('Location')!r}: give that URL"
            ) from None
        answer = err.read()[:300].decode("utf-8", errors="replace")
        raise InvalidArgument(
            f"{url} answered {err.code} to the input: {answer}; check the URL, --input and --content-type"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise InvalidArgument(f"cannot reach {url}: {reason!r}; is an HTTP service running there?") from None


class _Refuse(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None  # a redirect is answered as itself: the load generator does not follow them


_NO_REDIRECTS = urllib.request.build_opener(_Refuse)


@contextlib.contextmanager
def load_generator() -> Iterator[ProcessPoolExecutor]:
    """The load generator's process, for one sweep or several."""
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state of the caller's
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as generator:
        yield generator


def sweep(
    url: str,
    bodies: list[Body],
    levels: list[int],
    *,
    window_s: float,
    max_windows: int,
    tolerance: float,
    open_loop: bool = False,
    distribution: str = "poisson",
    on_level: Callable[[Level], None] = lambda level: None,
    generator: ProcessPoolExecutor | None = None,
) -> list[Level]:
    """Every level measured, in order: concurrencies, or with `open_loop` rates (requests per
    second). `on_level` hears of each as it ends. `generator`: the load generator's process (one
    of its own otherwise)."""
    if generator is None:
        with load_generator() as own:
            return sweep(url, bodies, levels, window_s=window_s, max_windows=max_windows, tolerance=tolerance,
                         open_loop=open_loop, distribution=distribution, on_level=on_level, generator=own)  # fmt: skip
    results = []
    status_url = service_stats.find_status_url(url)  # a raystore service tells how it batched
    for load in levels:
        before = service_stats.replica_snapshot(status_url) if status_url else None
        rate = float(load) if open_loop else None
        windows, is_steady = generator.submit(
            measure_level, url, bodies, load, window_s, max_windows, tolerance, rate=rate, distribution=distribution
        ).result()
        level = Level.of(load, [Window(**w) for w in windows], is_steady)
        if before is not None:
            level.batching = service_stats.difference(before, service_stats.replica_snapshot(status_url))
        on_level(level)
        results.append(level)
    return results
