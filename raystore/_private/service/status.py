"""What a service is running, for its console (`/ui/service`): each runner, its models and methods,
their batch settings and what their batch queues have done.

Where a method's queue lives decides what is seen: an embedded runner's queue is in this replica;
a served runner's are in its own replicas, and the numbers come from the one replica Serve routes
the question to (the page says which). Ray metrics have every replica's.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from raystore._private.runner.runner import Runner
    from raystore._private.service.service import Service

STATS_TIMEOUT_S = 5.0


async def service_status(service: Service) -> dict[str, Any]:
    runners = await asyncio.gather(*(_runner_status(runner) for runner in service.runners))
    return {"service": service.name, "apis": sorted(service.apis), "runners": list(runners)}


async def _runner_status(runner: Runner) -> dict[str, Any]:
    spec = runner.spec
    methods = []
    for name, method in spec.methods.items():
        stats, source = None, None
        if method.batchable:
            stats, source = await _stats(runner, name)
        # the queue's settings now (a `reconfigure` changes them), else those the runner was made with
        live = (stats or {}).pop("settings", None) or {}
        methods.append(
            {
                "name": name,
                "batchable": method.batchable,
                "streams": method.streams,
                "max_batch_size": live.get("max_batch_size", method.batch.max_batch_size),
                "max_latency_ms": live.get("max_latency_ms", method.batch.max_latency_ms),
                "stats": stats,
                "stats_from": source,
            }
        )
    return {
        "name": spec.name,
        "mode": spec.mode.value,
        "replicas": spec.num_replicas if not spec.autoscaling else "autoscaling",
        "models": [str(model.tag) for model in spec.models],
        "methods": methods,
    }


async def _stats(runner: Runner, name: str) -> tuple[dict[str, Any] | None, str]:
    source = "this replica" if runner.is_local else "one runner replica"
    try:
        return await asyncio.wait_for(runner.methods[name].replica_stats(), STATS_TIMEOUT_S), source
    except Exception as exc:  # a replica starting or gone: the page says so and goes on
        return None, f"unavailable ({type(exc).__name__})"
