"""What one measuring window saw, whether the last windows agree (a steady load), and where the
sweep's knee is. Pure: numbers in, numbers out."""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass, field

PERCENTILES = (50, 90, 95, 99)


@dataclass
class Window:
    """Requests completed within one window of `duration_s` seconds."""

    duration_s: float
    latencies_ms: list[float] = field(default_factory=list)  # of the successful requests
    sent: int = 0  # requests sent in the window (the offered load)
    errors: int = 0  # failed requests: other statuses, connection errors
    overloaded: int = 0  # 503s: the service shed them
    cpu_s: float = 0.0  # the load generator's own CPU time in the window

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def throughput(self) -> float:
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    def percentile(self, q: float) -> float:
        return percentile(sorted(self.latencies_ms), q)


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of sorted values; NaN for none."""
    if not ordered:
        return math.nan
    rank = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def steady(windows: list[Window], tolerance: float, needed: int = 3) -> bool:
    """Whether the last `needed` windows agree within `tolerance` (a fraction) on throughput and
    p99, as perf_analyzer judges a measurement stable."""
    if len(windows) < needed:
        return False
    last = windows[-needed:]
    for values in ([w.throughput for w in last], [w.percentile(99) for w in last]):
        if any(math.isnan(v) for v in values):
            return False
        mean = sum(values) / len(values)
        if mean == 0 or any(abs(v - mean) > tolerance * mean for v in values):
            return False
    return True


@dataclass
class Level:
    """One load level's result: the windows it took and the numbers of the last (steady) ones."""

    load: int  # concurrency (closed loop), or requests per second asked for (open loop)
    windows: int
    steady: bool
    throughput: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    requests: int
    errors: int
    overloaded: int
    generator_cpu: float  # the load generator's CPU use, in cores
    offered: float = 0.0  # requests sent per second
    batching: dict = field(default_factory=dict)  # the service's batch queues in this level, by runner.method

    @classmethod
    def of(cls, load: int, windows: list[Window], is_steady: bool, needed: int = 3) -> Level:
        last = windows[-needed:]
        latencies = sorted(value for w in last for value in w.latencies_ms)
        duration = sum(w.duration_s for w in last)
        return cls(
            load=load,
            windows=len(windows),
            steady=is_steady,
            throughput=len(latencies) / duration if duration else 0.0,
            p50_ms=percentile(latencies, 50),
            p90_ms=percentile(latencies, 90),
            p95_ms=percentile(latencies, 95),
            p99_ms=percentile(latencies, 99),
            mean_ms=sum(latencies) / len(latencies) if latencies else math.nan,
            requests=len(latencies),
            errors=sum(w.errors for w in last),
            overloaded=sum(w.overloaded for w in last),
            generator_cpu=sum(w.cpu_s for w in last) / duration if duration else 0.0,
            offered=sum(w.sent for w in last) / duration if duration else 0.0,
        )

    def as_dict(self) -> dict:
        return asdict(self)


MAX_FAILED_SHARE = 0.01  # a level failing (errors, 503s) more than this is no candidate


def failed_share(level: Level) -> float:
    answered = level.requests + level.errors + level.overloaded
    return (level.errors + level.overloaded) / answered if answered else 1.0


def best_within(levels: list[Level], budget_ms: float) -> Level | None:
    """The level of the highest throughput whose p99 is within `budget_ms` and which failed (or
    shed) at most 1% of its requests (None: none is): a level that sheds fast keeps a low p99."""
    fitting = [
        level
        for level in levels
        if not math.isnan(level.p99_ms) and level.p99_ms <= budget_ms and failed_share(level) <= MAX_FAILED_SHARE
    ]
    return max(fitting, key=lambda level: level.throughput, default=None)


def knee(levels: list[Level], growth: float = 0.05) -> Level | None:
    """Where throughput stops growing: the first level after which the next one adds less than
    `growth` (a fraction); the last level when it keeps growing. Levels that failed (or shed) more
    than `MAX_FAILED_SHARE` of their requests are no candidates, as for `best_within`."""
    levels = [level for level in levels if level.requests > 0 and failed_share(level) <= MAX_FAILED_SHARE]
    if not levels:
        return None
    for level, following in itertools.pairwise(levels):
        if following.throughput < level.throughput * (1 + growth):
            return level
    return levels[-1]
