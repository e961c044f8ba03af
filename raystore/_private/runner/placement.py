"""Where the versions of a versioned runner go: the router's picture of the versions each replica
holds, kept in the order each replica's own LRU pool keeps them, so that a request goes where its
version is and a version that no replica holds goes where loading it costs least.

Serve's multiplexing learns what a replica holds only a moment after it changes, and sends a
version held nowhere to a replica picked at random (of those holding the fewest), which then
evicts its own least recently used version even when another replica holds one nobody has asked
for in a long time. Here:

- each replica's versions are ordered by when a request for them last went there;
- a version held nowhere goes to a replica with room, else to the replica whose least recently
  used version was used longest ago: together the replicas evict as one LRU cache of
  `replicas * capacity` versions would;
- a version held by several replicas goes to the one that served it last, so that its other
  copies age out and free their room (unless the router spreads it on purpose);
- a placement is trusted before its replica reports it (for `grace_s`): the requests that follow
  the first one go to the same replica instead of loading the version elsewhere.

No Ray here: the Serve request router (`version_router.py`) feeds it what replicas report.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Collection, Hashable, Iterable, Sequence
from typing import TypeVar

GRACE_S = 5.0  # how long a placement is trusted before the replica's own report must confirm it

R = TypeVar("R", bound=Hashable)


class VersionPlacement:
    def __init__(self, capacity: int, grace_s: float = GRACE_S, clock: Callable[[], float] = time.monotonic):
        self.capacity = capacity
        self.grace_s = grace_s
        self._clock = clock
        self._uses = itertools.count(1)
        self.held: dict[Hashable, dict[str, int]] = {}  # replica -> version -> its last use there
        self._unconfirmed: dict[Hashable, dict[str, float]] = {}  # replica -> version -> when placed

    def holders(self, version: str, replicas: Iterable[R]) -> list[R]:
        """The replicas of `replicas` holding `version`, the one that served it last first."""
        found = [r for r in replicas if version in self.held.get(r, ())]
        return sorted(found, key=lambda r: -self.held[r][version])

    def target(self, replicas: Sequence[R]) -> R:
        """The replica that should load a version it does not hold: one with room (the emptiest),
        else the one whose least recently used version was used longest ago."""
        return min(replicas, key=self._cost)

    def _cost(self, replica: Hashable) -> tuple[int, int, float]:
        held = self.held.get(replica, {})
        if len(held) < self.capacity:
            return 0, len(held), random.random()  # random: ties do not all go to the first replica
        return 1, min(held.values()), random.random()

    def used(self, version: str, replica: Hashable) -> None:
        """A request for `version` goes to `replica`: it holds it from now on (loading it if it
        did not, and dropping its least recently used version if that makes one too many)."""
        held = self.held.setdefault(replica, {})
        # Trusted until a report confirms it, not after each request: a report that lacks it
        # later is recent (reports lag by a moment), and believing it keeps this picture in step
        # with the replica's own evictions.
        if version not in held:
            self._unconfirmed.setdefault(replica, {})[version] = self._clock()
        held[version] = next(self._uses)
        self._trim(replica)

    def reported(self, replica: Hashable, versions: Collection[str]) -> None:
        """What `replica` says it holds (or is loading). Placements it does not list yet stay for
        `grace_s`: its report may predate them."""
        now = self._clock()
        held = self.held.setdefault(replica, {})
        unconfirmed = self._unconfirmed.setdefault(replica, {})
        for version in list(held):
            if version in versions:
                unconfirmed.pop(version, None)
            elif now - unconfirmed.get(version, -self.grace_s - 1) > self.grace_s:
                del held[version]
                unconfirmed.pop(version, None)
        for version in versions:
            held.setdefault(version, 0)  # loaded for another caller: the first to go, as far as this router knows
        self._trim(replica)

    def forget(self, replicas: Collection[Hashable]) -> None:
        """Only `replicas` remain (the others stopped)."""
        for replica in [r for r in self.held if r not in replicas]:
            del self.held[replica]
            self._unconfirmed.pop(replica, None)

    def _trim(self, replica: Hashable) -> None:
        held = self.held[replica]
        while len(held) > self.capacity:
            victim = min(held, key=held.__getitem__)
            del held[victim]
            self._unconfirmed.get(replica, {}).pop(victim, None)
