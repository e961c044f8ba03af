"""A service served on a local Ray whose runners' batch settings and replicas change in place, for
`raystore perf --tune`.

It is deployed from a Serve config (`raystore build`'s), as `serve deploy` and `serve run CONFIG`
do, not with `serve.run`: Serve then applies a new config of unchanged code as a lightweight
update. A runner's new `user_config` reaches its running replicas' `reconfigure` (the ingress's
for embedded runners), and a new replica count adds or removes replicas; models stay loaded in
the replicas that stay.

The process that measures runs it as `python -m raystore._private.deploy.tunable MODULE:svc
--port P ...` and talks to it in lines of JSON: a setting to apply on the standard input, an
answer on the standard output (`ANSWER_PREFIX` first; the process's other output goes to the
standard error). The end of the standard input, Ctrl-C or SIGTERM stops it as `raystore serve`
stops.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from raystore._private.batch_config import validate_max_batch_size, validate_max_latency_ms
from raystore._private.deploy.build import build_config
from raystore._private.deploy.local import serve_locally
from raystore._private.runner.served import deployment_groups, deployment_name, ongoing_requests_for
from raystore._private.runner.versions import VersionedRunner
from raystore._private.service.service import Service
from raystore.exceptions import InvalidArgument, RaystoreError

ANSWER_PREFIX = "raystore-tunable "
SETTLE_TIMEOUT_S = 300.0  # new replicas load their models


@dataclass(frozen=True)
class RunnerSetting:
    """What one runner is set to; None leaves a value as the runner was made."""

    max_batch_size: int | None = None
    max_latency_ms: float | None = None
    replicas: int | None = None  # a served runner's replicas per deployment

    def __post_init__(self) -> None:
        # checked as the runner's own settings are, and kept as they would be (8.0 -> 8)
        if self.max_batch_size is not None:
            object.__setattr__(self, "max_batch_size", validate_max_batch_size(self.max_batch_size))
        if self.max_latency_ms is not None:
            object.__setattr__(self, "max_latency_ms", validate_max_latency_ms(self.max_latency_ms))
        replicas = self.replicas
        if replicas is not None and (isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1):
            raise InvalidArgument(f"replicas must be a whole number >= 1, got {replicas!r}")

    def batch_settings(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "replicas" and v is not None}


def batch_settings_of(service: Service, settings: Mapping[str, RunnerSetting]) -> dict[tuple[str, str], dict[str, Any]]:
    """The batch settings each batchable method of each named runner runs with under `settings`:
    a value left None is the method's own, as the runner was made. Every value is written out,
    so that a setting going back to the coded one reaches the replicas too (Serve calls
    `reconfigure` only with a `user_config`)."""
    runners = {runner.name: runner for runner in service.runners}
    out = {}
    for name, setting in settings.items():
        runner = runners.get(name)
        if runner is None:
            raise InvalidArgument(f"service {service.name!r} has no runner {name!r}; it has {sorted(runners)}")
        if isinstance(runner, VersionedRunner):
            raise InvalidArgument(
                f"runner {name!r} serves every version of a model from a pool of replicas: it is not tuned here"
            )
        for method, spec in runner.spec.methods.items():
            if spec.batchable:
                out[(name, method)] = {
                    "max_batch_size": setting.max_batch_size or spec.batch.max_batch_size,
                    "max_latency_ms": setting.max_latency_ms or spec.batch.max_latency_ms,
                }
    return out


def tuned_config(config: dict[str, Any], service: Service, settings: Mapping[str, RunnerSetting]) -> dict[str, Any]:
    """`config` (`build_config`'s for `service`) with each named runner's setting in its
    deployments: `user_config` for the batch settings of its batchable methods (the ingress's for
    an embedded runner), `num_replicas`, and the `max_ongoing_requests` a batch size needs."""
    config = copy.deepcopy(config)
    deployments = {d["name"]: d for d in config["applications"][0]["deployments"]}
    runners = {runner.name: runner for runner in service.runners}
    batch = batch_settings_of(service, settings)
    embedded: dict[str, dict[str, Any]] = {}
    for name, setting in settings.items():
        runner = runners[name]
        per_method = {method: values for (owner, method), values in batch.items() if owner == name}
        if runner.embedded:
            if setting.replicas is not None:
                raise InvalidArgument(
                    f"runner {name!r} is embedded in the ingress replica: it has no replicas of its own to set"
                )
            if per_method:
                embedded[name] = per_method
            continue
        if setting.replicas is not None and runner.spec.autoscaling:
            raise InvalidArgument(f"runner {name!r} autoscales: its replicas are its autoscaling policy's to set")
        for methods in deployment_groups(runner.spec):
            deployment = deployments[deployment_name(runner.spec, methods)]
            mine = {m: per_method[m] for m in methods if m in per_method}
            if mine:
                deployment["user_config"] = mine
                sizes = [
                    mine.get(m, {}).get("max_batch_size", runner.spec.methods[m].batch.max_batch_size) for m in methods
                ]
                deployment["max_ongoing_requests"] = ongoing_requests_for(sizes)
            if setting.replicas is not None:
                deployment["num_replicas"] = setting.replicas
    if embedded:
        deployments[f"{service.name}-ingress"]["user_config"] = {"runners": embedded}
    return config


class ConfigDeployer:
    """Deploys the service from its config and applies settings to it, each time waiting until
    Serve has settled on them (and the service's console reports the batch settings)."""

    def __init__(self, working_dir: str, port: int):
        self.working_dir, self.port = working_dir, port
        self.service: Service | None = None
        self.base: dict[str, Any] = {}

    def deploy(self, service: Service, import_path: str | None) -> None:
        """`serve_locally`'s deploy step: the config as the code says."""
        if import_path is None:
            raise InvalidArgument("a tunable service is deployed by its import path, MODULE:svc")
        # the module's folder, then the caller's PYTHONPATH, as `raystore serve` gives its replicas
        folder = str(Path(self.working_dir).resolve())
        pythonpath = os.pathsep.join(p for p in (folder, os.environ.get("PYTHONPATH", "")) if p)
        self.service = service
        self.base = build_config(import_path, working_dir=self.working_dir, pythonpath=pythonpath)
        self.apply({})

    def apply(self, settings: Mapping[str, RunnerSetting]) -> float:
        """Apply `settings` and wait until they hold; returns the seconds it took."""
        from ray.serve.context import _get_global_client
        from ray.serve.schema import ServeDeploySchema

        assert self.service is not None, "deploy() first"
        config = tuned_config(self.base, self.service, settings)
        started = time.monotonic()
        # The Serve client's deploy from a config, as `serve run CONFIG` and the REST API use it.
        _get_global_client().deploy_apps(ServeDeploySchema.model_validate(config))
        self._wait_settled(config, batch_settings_of(self.service, settings), started + SETTLE_TIMEOUT_S)
        return time.monotonic() - started

    def _wait_settled(
        self, config: dict[str, Any], batch: dict[tuple[str, str], dict[str, Any]], deadline: float
    ) -> None:
        """Until Serve reports the application running, each deployment healthy with its replicas,
        and the console the batch settings, with the ingress's calls reaching every replica of
        each served runner (its router hears of a new replica a moment after Serve runs it).
        Serve's status says DEPLOYING from the moment the config is taken (`deploy_apps` returns
        after), so a RUNNING read here is the new config's."""
        from ray import serve

        assert self.service is not None
        name = self.service.name
        replicas = {d["name"]: d.get("num_replicas") for d in config["applications"][0]["deployments"]}
        reached: dict[tuple[str, str], set[str]] = {}  # the replicas each method's statistics came from
        while True:
            application = serve.status().applications.get(name)
            state = _value(getattr(application, "status", "NOT_STARTED"))
            if state in ("DEPLOY_FAILED", "UNHEALTHY"):
                messages = [application.message] + [d.message for d in application.deployments.values()]  # type: ignore[union-attr]
                raise RaystoreError(f"Serve could not apply the setting: {'; '.join(m for m in messages if m)}")
            if (
                state == "RUNNING"
                and self._holds(application, replicas)
                and self._console_agrees(batch, reached, self._served_replicas(replicas))
            ):
                return
            if time.monotonic() > deadline:
                raise RaystoreError(f"the setting did not settle within {SETTLE_TIMEOUT_S:g} s (application {state})")
            time.sleep(0.1)

    def _served_replicas(self, replicas: dict[str, Any]) -> dict[tuple[str, str], int]:
        """The replicas of each batchable method of each served (not embedded) runner."""
        assert self.service is not None
        out = {}
        for runner in self.service.runners:
            if runner.embedded or isinstance(runner, VersionedRunner):
                continue
            for methods in deployment_groups(runner.spec):
                count = replicas.get(deployment_name(runner.spec, methods))
                for method in methods:
                    if isinstance(count, int) and runner.spec.methods[method].batchable:
                        out[(runner.name, method)] = count
        return out

    @staticmethod
    def _holds(application: Any, replicas: dict[str, Any]) -> bool:
        for deployment_name_, deployment in application.deployments.items():
            if _value(deployment.status) != "HEALTHY":
                return False
            wanted = replicas.get(deployment_name_)
            states = {_value(k): v for k, v in deployment.replica_states.items() if v}
            if isinstance(wanted, int) and states != {"RUNNING": wanted}:
                return False
        return True

    def _console_agrees(
        self,
        batch: dict[tuple[str, str], dict[str, Any]],
        reached: dict[tuple[str, str], set[str]],
        served: dict[tuple[str, str], int],
    ) -> bool:
        """Whether the service's `/ui/service.json` (each read answering for one replica of each
        method) reports each method's batch settings, and the reads so far (`reached`) came from
        as many replicas as each served method has. Without the console, Serve's word counts."""
        assert self.service is not None
        if not self.service.ui or not (batch or served):
            return True
        try:
            url = f"http://127.0.0.1:{self.port}/ui/service.json"
            with urllib.request.urlopen(url, timeout=10) as response:
                document = json.loads(response.read())
        except (OSError, ValueError):
            return False
        agrees = True
        for runner in document.get("runners", []):
            for method in runner["methods"]:
                key = (runner["name"], method["name"])
                wanted = batch.get(key)
                if wanted is not None and any(method[k] != v for k, v in wanted.items()):
                    agrees = False
                elif method.get("stats") and "replica" in method["stats"]:
                    reached.setdefault(key, set()).add(method["stats"]["replica"])
        return agrees and all(len(reached.get(key, ())) >= count for key, count in served.items())


def _value(status: Any) -> str:
    """A Serve status as its name: Serve's are `str` enums, whose `str()` is `Class.NAME`."""
    return str(getattr(status, "value", status))


def _listen(deployer: ConfigDeployer, answer: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
    """Apply each setting read from the standard input; stop at its end."""
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            request = json.loads(line)
            settings = {name: RunnerSetting(**values) for name, values in request["runners"].items()}
            answer({"applied": True, "seconds": round(deployer.apply(settings), 3)})
        except Exception as exc:  # a bad setting, or Serve refusing it: the measuring process says why
            answer({"error": str(exc) if isinstance(exc, RaystoreError) else f"{type(exc).__name__}: {exc}"})
    stop.set()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m raystore._private.deploy.tunable")
    parser.add_argument("target")
    parser.add_argument("--working-dir", default=".")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--metrics-port", type=int, default=None)
    args = parser.parse_args(argv)
    out: TextIO = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything else written to the standard output (by Ray, say) goes with the errors
    lock = threading.Lock()

    def answer(message: dict[str, Any]) -> None:
        with lock:
            out.write(ANSWER_PREFIX + json.dumps(message) + "\n")

    deployer = ConfigDeployer(args.working_dir, args.port)
    stop = threading.Event()

    def on_ready(url: str) -> None:
        answer({"ready": url})
        threading.Thread(target=_listen, args=(deployer, answer, stop), daemon=True).start()

    try:
        serve_locally(
            args.target,
            port=args.port,
            working_dir=args.working_dir,
            metrics_port=args.metrics_port,
            on_ready=on_ready,
            stop=stop,
            deploy=deployer.deploy,
        )
    except RaystoreError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
