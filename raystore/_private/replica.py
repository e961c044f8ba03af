"""What a process that serves models needs to know and do about itself: whether it is a Ray Serve
replica, which GPUs it may use, how many math threads to run, and keeping its start-up heap out of
the garbage collector's way. Runner replicas, service ingresses and batch queues all use these.

Ray is never imported here at module level: a process that has not loaded Ray is no replica.
"""

from __future__ import annotations

import gc
import os
import sys
from typing import Any

# Serve's defaults (a check every 10 s, 30 s to answer, three misses in a row) leave a hung replica
# (a deadlocked model, a stopped process) in the routing table for 90 s or more. A replica's loop
# stays free while its model computes (slow batches run on a worker thread), so one that cannot
# answer in 5 s, three checks in a row, is gone: replaced after about 20 s.
HEALTH_CHECK_OPTIONS = {"health_check_period_s": 3.0, "health_check_timeout_s": 5.0}


def serve_replica_context() -> Any | None:
    """Ray Serve's replica context (deployment, app_name, ...) inside a replica, else None."""
    if "ray" not in sys.modules:
        return None
    try:
        from ray import serve

        return serve.get_replica_context()
    except Exception:  # not in a replica (RayServeException), or Serve not importable
        return None


def in_serve_replica() -> bool:
    return serve_replica_context() is not None


def assigned_gpu_ids() -> list[str]:
    """The GPUs this process may use: Ray's assignment inside a Ray actor, else CUDA_VISIBLE_DEVICES."""
    if "ray" in sys.modules:
        import ray

        # Only an actor (a Serve replica) has GPUs assigned by Ray; a driver goes by its environment.
        if ray.is_initialized() and ray.get_runtime_context().get_actor_id() is not None:
            return [str(g) for g in ray.get_gpu_ids()]
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None or visible.strip() in ("", "-1"):
        return []
    return [g for g in visible.split(",") if g.strip()]


def limit_threads(num_cpus: float) -> None:
    """Size the math libraries' thread pools to the CPUs Ray reserved for this replica."""
    threads = str(max(1, int(num_cpus)))
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = threads
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def freeze_startup_heap() -> None:
    """Exempt what a replica built while starting (torch, Ray, Serve, the model) from the garbage
    collector's full passes. In such a process one full pass walks about 280k objects and took
    150 ms here: a stall that every request in flight waits out, in the latency tail. Objects
    made while serving are collected as usual."""
    gc.collect()  # not to keep start-up garbage forever
    gc.freeze()
