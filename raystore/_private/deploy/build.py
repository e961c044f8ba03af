"""`raystore build`: a Serve config (the `serve deploy` schema) for a service, with the models it
uses pinned, and the application builder such configs name."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from raystore._private.deploy.local import resolve_service
from raystore._private.deploy.models import CLUSTER_CPUS_PER_MODEL, service_for_models
from raystore._private.replica import HEALTH_CHECK_OPTIONS
from raystore._private.runner.served import deployment_groups, deployment_options
from raystore._private.runner.versions import DEFAULT_MODELS_PER_REPLICA, VersionedRunner
from raystore._private.service.ingress import INGRESS_ACTOR_OPTIONS
from raystore._private.service.service import load_service
from raystore.config import settings
from raystore.exceptions import InvalidArgument


def build_application(args: dict[str, Any]) -> Any:
    """Serve application builder named by built configs: `args = {"service": "MODULE:ATTRIBUTE"}`,
    or `{"models": ["NAME:VERSION", ...]}` for store models served over the V2 protocol."""
    if "models" in args:
        return service_for_models(
            args["models"],
            cpus_per_model=CLUSTER_CPUS_PER_MODEL,
            max_models_per_replica=args.get("max_models_per_replica", DEFAULT_MODELS_PER_REPLICA),
            gpu_memory_fraction=args.get("gpu_memory_fraction"),
        ).to_app()
    service = load_service(args["service"])
    return service.to_app(args["service"])


def build_config(
    target: str | None,
    *,
    models: list[str] | None = None,
    working_dir: str | None = None,
    route_prefix: str = "/",
    store: str | None = None,
    pythonpath: str | None = None,
    max_models_per_replica: int = DEFAULT_MODELS_PER_REPLICA,
    gpu_memory_fraction: float | None = None,
) -> dict[str, Any]:
    """A Serve config (the `serve deploy` schema) for a service, with the store location and every
    model the service's runners use pinned to the version `latest` means now, and every alias
    naming one of those versions to it.

    `store` and `pythonpath` say where the cluster finds the models and the service's module when
    they differ from this machine (an `s3://` store; the folder `cluster.yaml` mounts the code at);
    by default they are this machine's store and `working_dir`. With `models` (store tags) instead
    of a target, the application serves those models over the V2 protocol, each pinned by its
    full tag."""
    if store is not None and "://" not in store and not store.startswith("/"):
        raise InvalidArgument(
            f"store {store!r} must be a URL such as s3://bucket/store, or an absolute path on the cluster"
        )
    if pythonpath is not None and not pythonpath.startswith("/"):
        raise InvalidArgument(f"pythonpath {pythonpath!r} must be an absolute folder on the cluster's nodes")
    if (target is None) == (not models):
        raise InvalidArgument("give a service (MODULE:ATTRIBUTE) or models (--model TAG), not both")
    if models:
        service = service_for_models(
            models,
            cpus_per_model=CLUSTER_CPUS_PER_MODEL,
            max_models_per_replica=max_models_per_replica,
            gpu_memory_fraction=gpu_memory_fraction,
        )
        # each version pinned by its full tag; a bare name stays bare: every version, latest per request
        args: dict[str, Any] = {
            "models": [r.versions.model if _every_version(r) else str(r.models[0].tag) for r in service.runners]
        }
        if max_models_per_replica != DEFAULT_MODELS_PER_REPLICA:
            args["max_models_per_replica"] = max_models_per_replica
        if gpu_memory_fraction is not None:
            args["gpu_memory_fraction"] = gpu_memory_fraction
    else:
        service, import_path = resolve_service(target, working_dir)
        args = {"service": import_path}
    served = [m for r in service.runners if not _every_version(r) for m in r.models]
    pins = {m.tag.name: m.tag.version for m in served}
    # and every alias naming a served version keeps naming it: `NAME:ALIAS` -> what it means now
    pins.update({f"{m.tag.name}:{alias}": m.tag.version for m in served for alias in m.aliases})
    folder = str(Path(working_dir or os.getcwd()).resolve())
    ingress = {
        "name": f"{service.name}-ingress",
        "ray_actor_options": dict(INGRESS_ACTOR_OPTIONS),
        "max_ongoing_requests": service.max_ongoing_requests,
        **HEALTH_CHECK_OPTIONS,
    }
    deployments: list[dict[str, Any]] = [ingress]
    for runner in service.runners:
        if runner.embedded:
            continue
        for methods in deployment_groups(runner.spec):
            resources = runner.spec.methods[methods[0]].resources
            # "auto" GPUs are settled against the cluster when the code deploys. Serve replaces a
            # deployment's ray_actor_options with the config's whole, so the config names none.
            actor_options = None if resources.num_gpus is None else resources.ray_actor_options()
            deployments.append(deployment_options(runner.spec, methods, actor_options))
    env_vars = {
        "PYTHONPATH": pythonpath or folder,
        "RAYSTORE_HOME": store or settings().home,
        "RAYSTORE_PINS": json.dumps(pins, sort_keys=True),
    }
    return {
        "applications": [
            {
                "name": service.name,
                "route_prefix": route_prefix,
                "import_path": "raystore.serving:build_application",  # public: configs outlive versions
                "args": args,
                "runtime_env": {"env_vars": env_vars},
                "deployments": deployments,
            }
        ]
    }


def _every_version(runner: Any) -> bool:
    return isinstance(runner, VersionedRunner)


def validate_config(config: dict[str, Any]) -> None:
    """Check a config against Ray Serve's own schema (raises pydantic's ValidationError)."""
    from ray.serve.schema import ServeDeploySchema

    ServeDeploySchema.model_validate(config)
