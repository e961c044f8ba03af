"""`raystore serve --model TAG ...`: a service made of store models alone, each served by a runner
of its own (its saved signatures and batching, `resources="auto"`), reachable over the Open
Inference Protocol. No service module is written or imported. More models of the store can be
loaded (and unloaded) while it runs, through the protocol's repository API."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

from raystore._private.deploy.repository import StoreRepository, model_runner
from raystore._private.runner.model import Model
from raystore._private.runner.versions import DEFAULT_MODELS_PER_REPLICA, runner_for
from raystore._private.service.ingress import INGRESS_ACTOR_OPTIONS
from raystore._private.service.service import Service
from raystore._private.store import default_store
from raystore.exceptions import InvalidArgument
from raystore.tag import Tag

MODELS_SERVICE = "models"
CLUSTER_CPUS_PER_MODEL = 1.0  # on a cluster, a model replica asks for a CPU of its own, as any runner does


def service_for_models(
    tags: Sequence[str],
    name: str = MODELS_SERVICE,
    cpus_per_model: float | None = None,
    max_models_per_replica: int = DEFAULT_MODELS_PER_REPLICA,
    gpu_memory_fraction: float | None = None,
) -> Service:
    """A V2-only service of the store's models `tags`.

    - `NAME:VERSION` (or `NAME:latest`, an alias, a prefix): that version, resolved now, in a
      deployment of its own for all its signatures;
    - a bare `NAME`: every version of NAME from one deployment, a version loaded on first use and
      at most `max_models_per_replica` held by a replica (fewer while its GPU memory is above
      `gpu_memory_fraction`); a request without a version gets the one `latest` means then.

    Each deployment's replica asks for `cpus_per_model` CPUs (default: one, or a fair share of
    this machine's when that is less, so that every model and the ingress fit)."""
    if not tags:
        raise InvalidArgument("give at least one model: --model NAME[:VERSION]")
    store = default_store()
    every_version = [Tag.from_str(tag).name for tag in tags if ":" not in tag]
    pinned = {tag: Model.of(store.get(tag)) for tag in tags if ":" in tag}
    share = cpus_per_model if cpus_per_model is not None else local_share(len(tags))
    resources = {"num_cpus": share}  # GPUs stay "auto", as in model_runner
    runners: list[Any] = []
    seen = set()
    for tag in tags:  # in the order given
        model = pinned.get(tag)
        if model is None:
            model_name = Tag.from_str(tag).name
            if every_version.count(model_name) > 1 or any(m.tag.name == model_name for m in pinned.values()):
                raise InvalidArgument(
                    f"model {model_name} is given more than once: a bare name serves every version, "
                    f"NAME:VERSION one; give {model_name} or its versions"
                )
            runners.append(
                runner_for(
                    model_name,
                    max_models_per_replica=max_models_per_replica,
                    gpu_memory_fraction=gpu_memory_fraction,
                    resources=resources,
                )
            )
            continue
        if model.tag in seen:
            raise InvalidArgument(f"model {model.tag} is given twice")
        seen.add(model.tag)
        runner_name = None  # the model's name, as to_runner names it
        if sum(1 for other in pinned.values() if other.tag.name == model.tag.name) > 1:  # a runner per version
            runner_name = f"{model.tag.name.replace('.', '-')}-{model.tag.version}"
        runners.append(model_runner(model, share, name=runner_name))
    service = Service(name, runners=runners, v2=True)
    service.v2_repository = StoreRepository(service.name, share, fit_to_free=cpus_per_model is None)
    return service


LOAD_ROOM_CPUS = 0.1  # on one machine, kept free for models loaded over the repository API


def local_share(models: int) -> float:
    """One CPU per model, or less when this machine has fewer CPUs than models, the ingress and
    some room for models loaded later need."""
    cpus = os.cpu_count() or 1
    free = cpus - INGRESS_ACTOR_OPTIONS["num_cpus"] - LOAD_ROOM_CPUS
    share = math.floor(100 * free / max(models, 1)) / 100  # down: all must fit
    return min(1.0, max(0.05, share))
