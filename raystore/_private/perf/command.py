"""`raystore perf`, from options to report: what is measured (an API's URL, a V2 model, or a
service `MODULE:svc` started for it), the sweep (or, with `--tune`, a sweep per setting), and
what is printed and written. The CLI only parses the options."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from raystore._private.perf.inputs import Body, input_paths, load_inputs
from raystore._private.perf.windows import Level
from raystore.exceptions import InvalidArgument

MODULE_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")  # MODULE:svc, not host:port


@dataclass
class Target:
    """What to measure: `url` (an API's URL or `MODULE:svc`), or a V2 model (`model`, on the
    server `v2`, or on the `MODULE:svc` service)."""

    url: str | None = None
    api: str | None = None
    working_dir: str | None = None  # with MODULE:svc; "." when not given
    v2: str | None = None
    model: str | None = None
    model_version: str | None = None
    binary: bool = False

    @property
    def is_module(self) -> bool:
        return self.url is not None and MODULE_TARGET.fullmatch(self.url) is not None

    def check(self) -> None:
        if self.url is None and self.v2 is None:
            raise InvalidArgument("give a target: an API's URL, a service MODULE:svc, or --v2 URL --model NAME")
        if self.url is not None and self.v2 is not None:
            raise InvalidArgument("give a TARGET or --v2 URL, not both")
        if self.v2 is not None and self.model is None:
            raise InvalidArgument("--v2 needs --model NAME: the model to measure on that server")
        if self.model is not None and self.url is not None and not self.is_module:
            raise InvalidArgument("--model names a V2 model: give its server with --v2 URL, or a MODULE:svc target")
        if self.model is not None and self.api is not None:
            raise InvalidArgument("give --api (a service's API) or --model (a V2 model), not both")
        if self.api is not None and not self.is_module:
            raise InvalidArgument("--api goes with a MODULE:svc target; with a URL, the URL names the API")
        if self.model_version is not None and self.model is None:
            raise InvalidArgument("--model-version goes with --model")
        if self.binary and self.model is None:
            raise InvalidArgument("--binary sends V2 tensors in binary: it goes with --model")
        if self.working_dir is not None and not self.is_module:
            raise InvalidArgument("--working-dir goes with a MODULE:svc target: the folder MODULE is imported from")

    @property
    def folder(self) -> str:
        return self.working_dir or "."


@dataclass
class Inputs:
    input_file: str | None
    input_dir: str | None
    content_type: str | None


@dataclass
class Sweep:
    """How the levels are measured, and what is reported of them."""

    levels: list[int]
    open_loop: bool
    distribution: str
    window_s: float
    max_windows: int
    tolerance: float
    budget_ms: float | None
    csv_path: str | None
    json_path: str | None
    plot_path: str | None


@dataclass
class Grid:
    """`--tune`'s values."""

    batch_sizes: list[int]
    latencies_ms: list[float]
    replicas: list[int]
    runner: str | None


def run(target: Target, inputs: Inputs, sweep: Sweep, grid: Grid | None, echo: Callable[[str], None]) -> None:
    """Measure `target` as `sweep` says (over `grid`'s settings, when given); print and write
    the results. `echo` prints the verdict's lines to the standard output."""
    target.check()
    if target.model is not None and inputs.content_type is not None:
        raise InvalidArgument("--content-type does not go with --model: V2 requests are JSON, or binary with --binary")
    if grid is not None and not target.is_module:
        raise InvalidArgument(
            "--tune needs a MODULE:svc target: it starts the service and changes its runners' settings in place"
        )
    if target.model is not None:  # V2 bodies are made against the model's metadata, once it is reached
        input_paths(inputs.input_file, inputs.input_dir)  # but a missing file is said at once
        bodies = None
    else:
        bodies = load_inputs(inputs.input_file, inputs.input_dir, inputs.content_type)
    if not target.is_module:
        url, bodies = _ready_target(target.v2 or target.url, target, inputs, bodies)  # type: ignore[arg-type]
        _measure(url, bodies, sweep, echo)
        return
    from rich.console import Console

    from raystore._private.deploy.local import resolve_service
    from raystore._private.perf.target import api_route, started_service, tunable_service

    service, _ = resolve_service(target.url, target.folder)  # type: ignore[arg-type]  # for its routes, runners
    if target.model is not None:
        if not service.v2:
            raise InvalidArgument(
                f"{target.url} has no V2 routes: --model measures a model over the V2 protocol (Service(v2=True))"
            )
        route = ""
    else:
        route = api_route(service, target.url, target.api)  # type: ignore[arg-type]
    plan = None
    if grid is not None:
        from raystore._private.perf.tune import plan_grid

        plan = plan_grid(service, grid.runner, grid.batch_sizes, grid.latencies_ms, grid.replicas)
    Console(stderr=True).print(f"Starting {target.url} for the sweep ...")
    if plan is None:
        with started_service(target.url, route, target.folder) as url:  # type: ignore[arg-type]
            url, bodies = _ready_target(url, target, inputs, bodies)
            _measure(url, bodies, sweep, echo)
        return
    with tunable_service(target.url, route, target.folder) as tunable:  # type: ignore[arg-type]
        url, bodies = _ready_target(tunable.url, target, inputs, bodies)
        _tune(url, bodies, sweep, plan, tunable.apply, echo)


def _ready_target(base: str, target: Target, inputs: Inputs, bodies: list[Body] | None) -> tuple[str, list[Body]]:
    """The URL requests go to and their bodies: as given for an API; for a V2 model, its infer URL
    and bodies made against its metadata."""
    if target.model is None:
        return base, bodies  # type: ignore[return-value]
    from raystore._private.perf.v2 import model_metadata, model_url, v2_bodies

    model = model_url(base, target.model, target.model_version)
    metadata = model_metadata(model)
    return f"{model}/infer", v2_bodies(inputs.input_file, inputs.input_dir, metadata, target.binary)


def _measure(url: str, bodies: list[Body], sweep: Sweep, echo: Callable[[str], None]) -> None:
    from rich.console import Console

    from raystore._private.perf.report import table, verdict, write_csv, write_json
    from raystore._private.perf.sweep import probe

    probe(url, bodies[0])
    console = Console(stderr=True)
    console.print(f"Measuring {url}: {_describe(sweep)}")
    with _generator(url, bodies, sweep, console) as measure:
        results = measure()
    Console(width=max(Console().width, 150)).print(table(results, f"raystore perf {url}"))
    for line in verdict(results, sweep.budget_ms):
        echo(line)
    if sweep.csv_path:
        write_csv(results, sweep.csv_path)
    if sweep.json_path:
        write_json(results, sweep.json_path, _target_document(url, sweep), sweep.budget_ms)
    if sweep.plot_path:
        from raystore._private.perf.plot import plot
        from raystore._private.perf.tune import stands_for

        title = f"raystore perf {url}"
        plot(results, sweep.plot_path, title, stands_for(results, sweep.budget_ms), sweep.budget_ms)


def _tune(
    url: str, bodies: list[Body], sweep: Sweep, plan: Any, apply: Callable[[Any], float], echo: Callable[[str], None]
) -> None:
    from rich.console import Console

    from raystore._private.perf.report import tune_table, tune_verdict, write_tune_csv, write_tune_json
    from raystore._private.perf.sweep import probe
    from raystore._private.perf.tune import recommend, tune

    console = Console(stderr=True)
    for note in plan.notes:
        console.print(note)
    per_level = sweep.window_s * 3 + 1  # at least three windows, after a second of warm-up
    minutes = len(plan.points) * len(sweep.levels) * per_level / 60
    console.print(
        f"Tuning runners {plan.runners} at {url}: {len(plan.points)} settings x {len(sweep.levels)} levels "
        f"({_describe(sweep)}), at least {minutes:.1f} min"
    )

    def heard(i: int, point: Any, seconds: float) -> None:
        console.print(f"Setting {i + 1}/{len(plan.points)}: {point.label()} (applied in {seconds:.1f} s)")
        probe(url, bodies[0])  # the service still takes the input as set now

    def refused(i: int, point: Any, error: str) -> None:
        console.print(f"Setting {i + 1}/{len(plan.points)}: {point.label()} was refused: {error}")

    with _generator(url, bodies, sweep, console) as measure:
        trials, interrupted = tune(plan, apply, measure, sweep.budget_ms, on_setting=heard, on_failure=refused)
    if interrupted:
        console.print(f"Interrupted: reporting the {len(trials)} of {len(plan.points)} settings measured.")
    recommended = recommend(trials)
    Console(width=max(Console().width, 150)).print(tune_table(trials, recommended, f"raystore perf --tune {url}"))
    for line in tune_verdict(trials, recommended, sweep.budget_ms, plan):
        echo(line)
    if sweep.csv_path:
        write_tune_csv(trials, sweep.csv_path, recommended)
    if sweep.json_path:
        document = _target_document(url, sweep)
        write_tune_json(trials, sweep.json_path, document, sweep.budget_ms, recommended, plan)
    if sweep.plot_path:
        from raystore._private.perf.plot import plot_tune

        plot_tune(trials, sweep.plot_path, f"raystore perf --tune {url}", recommended, sweep.budget_ms)


@contextlib.contextmanager
def _generator(url: str, bodies: list[Body], sweep: Sweep, console: Any) -> Iterator[Callable[[], list[Level]]]:
    """A `measure()` that sweeps the levels, reusing one load generator process for every sweep."""
    from raystore._private.perf.sweep import load_generator
    from raystore._private.perf.sweep import sweep as sweep_levels

    def heard(level: Level) -> None:
        state = "steady" if level.steady else "not steady"
        offered = f" of {level.offered:.1f} sent" if sweep.open_loop else ""
        console.print(
            f"  load {level.load}: {level.throughput:.1f} req/s{offered}, p99 {level.p99_ms:.1f} ms "
            f"({level.windows} windows, {state})"
        )

    with load_generator() as generator:

        def measure() -> list[Level]:
            return sweep_levels(
                url,
                bodies,
                sweep.levels,
                window_s=sweep.window_s,
                max_windows=sweep.max_windows,
                tolerance=sweep.tolerance,
                open_loop=sweep.open_loop,
                distribution=sweep.distribution,
                on_level=heard,
                generator=generator,
            )

        yield measure


def _describe(sweep: Sweep) -> str:
    what = f"rates {sweep.levels} req/s ({sweep.distribution})" if sweep.open_loop else f"concurrency {sweep.levels}"
    return f"{what}, windows of {sweep.window_s:g} s, steady within {sweep.tolerance * 100:g}%"


def _target_document(url: str, sweep: Sweep) -> dict[str, Any]:
    mode = {"mode": "rate", "distribution": sweep.distribution} if sweep.open_loop else {"mode": "concurrency"}
    return {"url": url, **mode}
