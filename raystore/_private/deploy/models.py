"""`raystore serve --model TAG ...`: a service made of store models alone, each served by a runner
of its own (its saved signatures and batching, `resources="auto"`), reachable over the Open
Inference Protocol. No service module is written or imported. More models of the store can be
loaded (and unloaded) while it runs, through the protocol's repository API."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from raystore._private.deploy.repository import StoreRepository
from raystore._private.runner.model import Model
from raystore._private.service.ingress import INGRESS_ACTOR_OPTIONS
from raystore._private.service.service import Service
from raystore._private.store import default_store
from raystore.exceptions import InvalidArgument

MODELS_SERVICE = "models"
CLUSTER_CPUS_PER_MODEL = 1.0  # on a cluster, a model replica asks for a CPU of its own, as any runner does


def service_for_models(tags: Sequence[str], name: str = MODELS_SERVICE, cpus_per_model: float | None = None) -> Service:
    """A V2-only service of the store's models `tags` (each resolved now: `latest` means the
    version that is newest as the server starts). Each model runs in one deployment for all its
    signatures (one copy of the model), with `cpus_per_model` CPUs a replica (default: one, or
    a fair share of this machine's when that is less, so that every model and the ingress fit)."""
    if not tags:
        raise InvalidArgument("give at least one model: --model NAME[:VERSION]")
    store = default_store()
    models = [Model.of(store.get(tag)) for tag in tags]
    share = cpus_per_model if cpus_per_model is not None else local_share(len(models))
    seen = set()
    runners = []
    for model in models:
        if model.tag in seen:
            raise InvalidArgument(f"model {model.tag} is given twice")
        seen.add(model.tag)
        twins = sum(1 for other in models if other.tag.name == model.tag.name)
        runner_name = model.tag.name.replace(".", "-")
        if twins > 1:  # several versions of one model: a runner each
            runner_name = f"{runner_name}-{model.tag.version}"
        resources = {"num_cpus": share}  # GPUs stay "auto": one where the framework uses it and the cluster has one
        runners.append(model.to_runner(name=runner_name, colocate=True, resources=resources))
    service = Service(name, runners=runners, v2=True)
    service.v2_repository = StoreRepository(service.name, share, fit_to_free=cpus_per_model is None)
    return service


def local_share(models: int) -> float:
    """One CPU per model, or less when this machine has fewer CPUs than models and the ingress need."""
    cpus = os.cpu_count() or 1
    share = math.floor(100 * (cpus - INGRESS_ACTOR_OPTIONS["num_cpus"]) / max(models, 1)) / 100  # down: all must fit
    return min(1.0, max(0.05, share))
