"""The `raystore` command. Thin: parse arguments, call the library, print the result."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer
import yaml

from raystore._private.deploy.cluster import delete_application, deploy_config, serve_status
from raystore._private.runner.gpus import list_gpus
from raystore._private.runner.versions import DEFAULT_MODELS_PER_REPLICA
from raystore._private.version import __version__
from raystore.cli import models as models_cli
from raystore.cli.output import emit_table, human_size
from raystore.exceptions import InvalidArgument, NoNvidiaGpu, RaystoreError

app = typer.Typer(
    name="raystore",
    help="A versioned model store and a model server on Ray Serve.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(models_cli.app, name="models")


class LogFormat(str, Enum):
    text = "text"
    json = "json"


def _print_version(value: bool) -> None:
    if value:
        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the raystore version and exit."
    ),
) -> None:
    """A versioned model store and a model server on Ray Serve. `raystore --install-completion`
    adds tab completion to your shell."""


@app.command()
def version() -> None:
    """Print the raystore version."""
    typer.echo(__version__)


@app.command()
def gpus() -> None:
    """List this machine's NVIDIA GPUs: index, name, memory and utilisation."""
    try:
        found = list_gpus()
    except NoNvidiaGpu as exc:
        typer.echo(f"No NVIDIA GPU: {exc}")
        return
    rows = [
        [
            str(g.index),
            g.name,
            human_size(g.memory_total),
            human_size(g.memory_free),
            f"{g.utilization}%" if g.utilization >= 0 else "n/a",
        ]
        for g in found
    ]
    emit_table(["Index", "Name", "Memory Total", "Memory Free", "Utilization"], rows)


def _models_option() -> Any:
    return typer.Option(
        [],
        "--model",
        "-m",
        help="A store model to serve over the Open Inference Protocol (KServe V2) instead of a service: NAME "
        "serves every version (latest per request), NAME:VERSION (or :latest, an alias) that one, pinned; "
        "repeat for several. No service module needed.",
    )


def _max_models_option() -> Any:
    return typer.Option(
        DEFAULT_MODELS_PER_REPLICA,
        "--max-models-per-replica",
        min=1,
        help="Versions a replica of a bare --model NAME holds at most.",
    )


def _gpu_memory_fraction_option() -> Any:
    return typer.Option(
        None,
        "--gpu-memory-fraction",
        min=0.01,
        max=1.0,
        help="A replica of a bare --model NAME also evicts idle versions while its PyTorch GPU memory is above this.",
    )


@app.command("serve")
def serve_command(
    target: str | None = typer.Argument(
        None, help="The service as MODULE:ATTRIBUTE, e.g. service:svc (or --model instead)."
    ),
    models: list[str] = _models_option(),
    max_models: int = _max_models_option(),
    gpu_memory_fraction: float | None = _gpu_memory_fraction_option(),
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(3000, "--port", help="HTTP port."),
    address: str | None = typer.Option(None, "--address", help="An existing Ray cluster (else a local one starts)."),
    working_dir: str = typer.Option(".", "--working-dir", help="Folder MODULE is imported from."),
    metrics_port: int = typer.Option(8079, "--metrics-port", help="Prometheus metrics port of the local Ray."),
    graceful_timeout: float = typer.Option(
        30.0, "--graceful-timeout", min=0, help="Seconds requests in flight get to finish on Ctrl-C or SIGTERM."
    ),
    access_log: bool = typer.Option(True, "--access-log/--no-access-log", help="A line per API request on stderr."),
    log_format: LogFormat = typer.Option(LogFormat.text, "--log-format", help="text, or json: one object a line."),
) -> None:
    """Serve a Service over HTTP until Ctrl-C (a second Ctrl-C stops without waiting for requests in flight)."""
    # The serving stack (Serve deployments, starlette, numpy) loads only for the commands that
    # serve or build: `raystore models ...` starts in half the time without it.
    from raystore._private.deploy.local import ConsoleLog, describe_mode, serve_locally

    if (target is None) == (not models):
        raise InvalidArgument("give a service (MODULE:ATTRIBUTE) or --model TAG (one or more), not both")
    if models:
        from raystore._private.deploy.models import CLUSTER_CPUS_PER_MODEL, service_for_models

        service = service_for_models(
            models,
            cpus_per_model=None if address is None else CLUSTER_CPUS_PER_MODEL,
            max_models_per_replica=max_models,
            gpu_memory_fraction=gpu_memory_fraction,
        )
        what = ", ".join(
            f"{r.versions.model} (every version)" if hasattr(r, "versions") else f"{r.models[0].tag}"
            for r in service.runners
        )
        docs = "models over the Open Inference Protocol at {url}/v2/models/NAME"
    else:
        service, what, docs = target, target, "API docs at {url}/docs"

    def ready(url: str) -> None:
        metrics = f"; metrics at http://127.0.0.1:{metrics_port}/metrics" if address is None else ""
        typer.echo(
            f"Serving {what} at {url} ({describe_mode() if address is None else 'cluster proxy'}); "
            f"{docs.format(url=url)}{metrics}. Press Ctrl-C to stop.",
            err=True,
        )

    serve_locally(
        service,
        host=host,
        port=port,
        address=address,
        working_dir=working_dir,
        metrics_port=metrics_port,
        graceful_timeout_s=graceful_timeout,
        console=ConsoleLog(access=access_log, json_lines=log_format is LogFormat.json),
        on_ready=ready,
        on_stopping=lambda line: typer.echo(line, err=True),
    )
    typer.echo("Stopped.", err=True)


@app.command("ui")
def ui_command(
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on."),
    port: int = typer.Option(3030, "--port", help="HTTP port."),
    remote: bool = typer.Option(
        False, "--remote", help="Show the remote store (RAYSTORE_REMOTE) instead of the local one."
    ),
    allow_writes: bool | None = typer.Option(
        None,
        "--allow-writes/--read-only",
        help="Allow deleting versions and setting aliases (default: only on 127.0.0.1; elsewhere it needs RAYSTORE_UI_TOKEN).",
    ),
) -> None:
    """A web console of the store: models, versions, files, versions compared, downloads. Ctrl-C stops it."""
    import os

    import uvicorn

    from raystore._private.console.access import LOOPBACK, WriteAccess
    from raystore._private.console.app import console_app
    from raystore._private.store import default_store, remote_store

    store = remote_store() if remote else default_store()
    access = WriteAccess.for_host(host, allow_writes=allow_writes, token=os.environ.get("RAYSTORE_UI_TOKEN"))
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    mode = "read-only" if not access.writes else "writes need the token" if access.token else "writes allowed"
    typer.echo(f"Console of {store.url} at {url} ({mode}). Press Ctrl-C to stop.", err=True)
    app = console_app(store, access=access, loopback_only=host in LOOPBACK)  # DNS rebinding reads nothing
    uvicorn.run(app, host=host, port=port, log_level="warning")
    typer.echo("Stopped.", err=True)


@app.command("perf")
def perf_command(
    target: str | None = typer.Argument(
        None,
        help="The API's URL (http://127.0.0.1:3000/classify), or a service MODULE:svc to start for the sweep.",
    ),
    api: str | None = typer.Option(
        None, "--api", help="With MODULE:svc: the API to measure (needed when it has several)."
    ),
    working_dir: str | None = typer.Option(
        None, "--working-dir", help="With MODULE:svc: the folder MODULE is imported from (default: here)."
    ),
    v2: str | None = typer.Option(
        None, "--v2", help="A V2 (Open Inference Protocol) server's URL, e.g. http://127.0.0.1:3000; with --model."
    ),
    model: str | None = typer.Option(
        None, "--model", help="The V2 model to measure, on --v2's server or on the MODULE:svc service."
    ),
    model_version: str | None = typer.Option(None, "--model-version", help="With --model: the version to measure."),
    binary: bool = typer.Option(
        False, "--binary", help="With --model: send tensors in the binary tensor data extension, not as JSON."
    ),
    input_file: str | None = typer.Option(
        None, "--input", help="A request body: JSON, CSV, an image, a .npy array (with --model: .json, .npy, .npz)."
    ),
    input_dir: str | None = typer.Option(None, "--input-dir", help="A folder of request bodies, sent round robin."),
    content_type: str | None = typer.Option(None, "--content-type", help="Else inferred from each file's suffix."),
    concurrency: str | None = typer.Option(
        None, "--concurrency", help="Closed-loop loads: 1,4,16 or a range 1:256:x2 (default 1,4,16,64)."
    ),
    rate: str | None = typer.Option(
        None, "--rate", help="Open-loop loads instead, in requests per second: 100,200 or 100:2000:x2."
    ),
    distribution: str = typer.Option(
        "poisson", "--distribution", help="Open-loop arrivals: poisson (random, as users arrive) or constant."
    ),
    window: float = typer.Option(5.0, "--window", min=0.2, help="Seconds a measuring window lasts."),
    stability: float = typer.Option(10.0, "--stability", min=0.1, help="Percent the last 3 windows may differ by."),
    max_trials: int = typer.Option(10, "--max-trials", min=3, help="Windows per level at most."),
    latency_budget_ms: float | None = typer.Option(
        None, "--latency-budget-ms", min=0.001, help="Report the best throughput whose p99 stays within it."
    ),
    csv_path: str | None = typer.Option(None, "--csv", help="Write one row per level here."),
    json_path: str | None = typer.Option(None, "--json", help="Write the levels and the verdict here."),
    plot_path: str | None = typer.Option(
        None, "--plot", help="Draw throughput against p99 (and batch sizes) into this PNG (raystore[perf])."
    ),
    tune: bool = typer.Option(
        False,
        "--tune",
        help="With MODULE:svc: sweep each setting of the grid below, applied in place, and recommend one.",
    ),
    tune_batch_sizes: str | None = typer.Option(
        None, "--tune-batch-sizes", help="max_batch_size values to try (default 8,32,128)."
    ),
    tune_latencies_ms: str | None = typer.Option(
        None, "--tune-latencies-ms", help="max_latency_ms values to try (default 5,25)."
    ),
    tune_replicas: str | None = typer.Option(
        None, "--tune-replicas", help="Replicas to try, for runners in deployments of their own (default 1,2)."
    ),
    tune_runner: str | None = typer.Option(None, "--tune-runner", help="Tune this runner only (default: every one)."),
) -> None:
    """Measure an API's throughput and latency at each load, closed loop, each level until its
    windows agree (as perf_analyzer does); print a table and which level to pick. With --tune,
    do so for each batch setting and replica count of a grid, and recommend one (as Triton's
    Model Analyzer does)."""
    from raystore._private.perf.command import Grid, Inputs, Sweep, Target, run
    from raystore._private.perf.levels import parse_levels

    if concurrency is not None and rate is not None:
        raise InvalidArgument("give --concurrency (closed loop) or --rate (open loop), not both")
    if distribution not in ("poisson", "constant"):
        raise InvalidArgument(f"--distribution must be poisson or constant, got {distribution!r}")
    open_loop = rate is not None
    grid = None
    if tune:
        from raystore._private.perf.tune import parse_numbers

        grid = Grid(
            parse_numbers(tune_batch_sizes or "8,32,128", "--tune-batch-sizes", whole=True),
            parse_numbers(tune_latencies_ms or "5,25", "--tune-latencies-ms", whole=False),
            parse_numbers(tune_replicas or "1,2", "--tune-replicas", whole=True),
            tune_runner,
        )
    else:
        given = [name for name, value in (("--tune-batch-sizes", tune_batch_sizes), ("--tune-latencies-ms",
                 tune_latencies_ms), ("--tune-replicas", tune_replicas), ("--tune-runner", tune_runner)) if value]  # fmt: skip
        if given:
            raise InvalidArgument(f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with --tune")
    run(
        Target(target, api, working_dir, v2, model, model_version, binary),
        Inputs(input_file, input_dir, content_type),
        Sweep(
            levels=parse_levels(rate, "--rate") if open_loop else parse_levels(concurrency or "1,4,16,64"),
            open_loop=open_loop,
            distribution=distribution,
            window_s=window,
            max_windows=max_trials,
            tolerance=stability / 100,
            budget_ms=latency_budget_ms,
            csv_path=csv_path,
            json_path=json_path,
            plot_path=plot_path,
        ),
        grid,
        typer.echo,
    )


@app.command("build")
def build_command(
    target: str | None = typer.Argument(None, help="The service as MODULE:ATTRIBUTE, e.g. service:svc (or --model)."),
    models: list[str] = _models_option(),
    max_models: int = _max_models_option(),
    gpu_memory_fraction: float | None = _gpu_memory_fraction_option(),
    output: str = typer.Option(..., "--output", "-o", help="Where to write the config, e.g. deployments/NAME.yaml."),
    working_dir: str = typer.Option(".", "--working-dir", help="Folder MODULE is imported from."),
    store: str = typer.Option(
        None,
        "--store",
        help="The store the cluster loads models from, e.g. s3://bucket/store (default: this machine's store).",
    ),
    pythonpath: str = typer.Option(
        None,
        "--pythonpath",
        help="Where MODULE's folder is on the cluster's nodes (default: --working-dir, resolved here).",
    ),
    route_prefix: str = typer.Option("/", "--route-prefix", help="The HTTP path the service answers under."),
) -> None:
    """Write a Ray Serve config (serve deploy schema) with model versions pinned."""
    from raystore._private.deploy.build import build_config, validate_config

    config = build_config(
        target,
        models=models,
        working_dir=working_dir,
        store=store,
        pythonpath=pythonpath,
        route_prefix=route_prefix,
        max_models_per_replica=max_models,
        gpu_memory_fraction=gpu_memory_fraction,
    )
    validate_config(config)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Built by `raystore build`: a Ray Serve config; models are pinned by RAYSTORE_PINS.\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    pins = config["applications"][0]["runtime_env"]["env_vars"]["RAYSTORE_PINS"]
    typer.echo(f"Wrote {path} (models pinned: {pins})", err=True)


@app.command("deploy")
def deploy_command(
    target: str | None = typer.Argument(
        None, help="MODULE:ATTRIBUTE of a service, or a config built by `raystore build` (or --model)."
    ),
    models: list[str] = _models_option(),
    max_models: int = _max_models_option(),
    gpu_memory_fraction: float | None = _gpu_memory_fraction_option(),
    address: str = typer.Option(..., "--address", "-a", help="The cluster's dashboard, e.g. http://HEAD:8265."),
    working_dir: str = typer.Option(".", "--working-dir", help="Folder MODULE is imported from."),
    timeout: float = typer.Option(300, "--timeout", help="Seconds to wait for the application to run."),
) -> None:
    """Deploy a service to a running Ray cluster and wait until it is healthy."""
    from raystore._private.deploy.build import build_config, validate_config

    if target is not None and target.endswith((".yaml", ".yml")) and not models:
        config = yaml.safe_load(Path(target).read_text())
    else:
        config = build_config(
            target,
            models=models,
            working_dir=working_dir,
            max_models_per_replica=max_models,
            gpu_memory_fraction=gpu_memory_fraction,
        )
    validate_config(config)
    shown: dict = {}

    def progress(states: dict) -> None:
        if states != shown:
            shown.clear()
            shown.update(states)
            typer.echo("  " + ", ".join(f"{name}: {state}" for name, state in states.items()), err=True)

    deploy_config(address, config, wait_s=timeout, on_progress=progress)
    names = ", ".join(app["name"] for app in config["applications"])
    typer.echo(f"Deployed {names} to {address}")


@app.command("status")
def status_command(
    address: str = typer.Option(..., "--address", "-a", help="The cluster's dashboard, e.g. http://HEAD:8265."),
) -> None:
    """Show the Serve applications on a cluster and their deployments."""
    applications = serve_status(address).get("applications") or {}
    if not applications:
        typer.echo(f"No applications on {address}")
        return
    rows = []
    for name, app_status in applications.items():
        for deployment, info in (app_status.get("deployments") or {}).items():
            replicas = info.get("replica_states") or {}
            rows.append(
                [
                    name,
                    app_status.get("status", "?"),
                    deployment,
                    info.get("status", "?"),
                    str(replicas.get("RUNNING", 0)),
                ]
            )
    emit_table(["Application", "Status", "Deployment", "Deployment Status", "Running Replicas"], rows)


@app.command("delete")
def delete_command(
    name: str = typer.Argument(..., help="The application (service) name."),
    address: str = typer.Option(..., "--address", "-a", help="The cluster's dashboard, e.g. http://HEAD:8265."),
    keep_loaded: bool = typer.Option(
        False, "--keep-loaded", help="Delete a --model server even while models loaded over V2 run (they stay)."
    ),
) -> None:
    """Delete a Serve application from a cluster."""
    delete_application(address, name, keep_loaded=keep_loaded)
    typer.echo(f"Deleted {name} from {address}")


def main() -> None:
    """Console-script entry point: raystore errors become one line on stderr and exit status 1."""
    try:
        app()
    except RaystoreError as exc:
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(1)
    except OSError as exc:  # a store root that is a file, a full disk, a read-only folder...
        typer.echo(f"Error: {exc.strerror or exc}{': ' + str(exc.filename) if exc.filename else ''}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("Interrupted", err=True)
        sys.exit(130)
