"""The Serve request router of a versioned runner's deployment (`runner_for`): every caller's
handle routes with it.

- A request goes to the replica that served its version last (`placement.py` keeps the picture),
  and a version held nowhere to where loading it costs least.
- A hot version spreads: when every replica holding it has `spread_at` requests in flight (the
  method's `max_batch_size`; requests of all versions, by Serve's queue-length cache) and another
  replica has under half as many as the least busy of them, the request goes to that one, which
  loads the version too. Serve's own router
  spreads a version only once its replicas refuse requests, at `max_ongoing_requests`
  (ray-project/ray#48741), which for a batching replica is long after it is saturated.
- A request is matched to the replica chosen for it, not first-in-first-out: a replica chosen for
  one version's request never takes another version's request instead.
"""

from __future__ import annotations

import random
from typing import Any

from ray.serve.request_router import MultiplexMixin, PendingRequest, ReplicaID, RequestRouter, RunningReplica

from raystore._private.runner.placement import VersionPlacement

DEFAULT_SPREAD_AT = 100


class VersionsRouter(MultiplexMixin, RequestRouter):
    """(MultiplexMixin only for its upkeep of Serve's index of pending requests by model id, which
    its matcher prunes: without it, the index keeps every request ever routed.)"""

    def initialize_state(self, max_models_per_replica: int = 4, spread_at: int = DEFAULT_SPREAD_AT, **_: Any) -> None:
        # Serve calls this as it makes the router, before it hands over any replica (Router.request_router)
        self.placement = VersionPlacement(max_models_per_replica)
        self.spread_at = spread_at

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        for replica in replicas:
            self.placement.reported(replica.replica_id, replica.multiplexed_model_ids)
        self.placement.forget({r.replica_id for r in replicas})

    async def choose_replicas(
        self, candidate_replicas: list[RunningReplica], pending_request: PendingRequest | None = None
    ) -> list[list[RunningReplica]]:
        if not candidate_replicas:
            return []
        version = pending_request.metadata.multiplexed_model_id if pending_request is not None else ""
        if pending_request is not None:
            pending_request.routing_context.should_backoff = True  # every replica full: wait before trying again
        if not version:  # a call without a version (stats): the less busy of two
            return [random.sample(candidate_replicas, min(2, len(candidate_replicas)))]
        self._get_pending_request_matching_multiplexed_model_id(pending_request.metadata)  # prunes the index
        placement = self.placement
        by_id = {r.replica_id: r for r in candidate_replicas}
        holders = [by_id[i] for i in placement.holders(version, by_id)]
        others = [r for r in candidate_replicas if r not in holders]
        spill = by_id[placement.target([r.replica_id for r in others])] if others else None
        chosen = next((h for h in holders if self._queue_len(h) < self.spread_at), None)
        if chosen is None and holders:  # every holder busy: spread to a quiet replica, or wait on the least busy
            least = min(holders, key=self._queue_len)
            quiet = spill is not None and 2 * self._queue_len(spill) < self._queue_len(least)
            chosen = spill if quiet else least
        if chosen is None:  # held nowhere
            chosen = spill
        placement.used(version, chosen.replica_id)  # before it reports: the next requests follow
        ranks = [[chosen]]
        rest = [h for h in holders if h is not chosen]
        if rest:
            ranks.append(rest)
        if spill is not None and spill is not chosen:
            ranks.append([spill])  # only when the others refuse the request
        return ranks

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        version = pending_request.metadata.multiplexed_model_id
        if version and version not in self.placement.held.get(replica_id, ()):
            self.placement.used(version, replica_id)  # refused where it was meant to go

    def _queue_len(self, replica: RunningReplica) -> int:
        return self.replica_queue_len_cache.get(replica.replica_id) or 0
