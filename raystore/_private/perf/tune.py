"""`raystore perf MODULE:svc --tune`: the sweep repeated over a small grid of batch settings and
replica counts, each applied in place to one running service (`deploy.tunable`), and the setting
to pick, as Triton's Model Analyzer recommends a model configuration.

Each setting's level is its best within the latency budget (the knee without one); the
recommendation is, among the settings whose level comes within `NEAR` of the highest throughput,
the one with the fewest replicas, then the lowest p99: as fast, for less.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

from raystore._private.deploy.tunable import RunnerSetting
from raystore._private.perf.windows import Level, best_within, knee
from raystore._private.runner.versions import VersionedRunner
from raystore._private.service.service import Service
from raystore.exceptions import InvalidArgument, RaystoreError

NEAR = 0.05  # settings within 5% of the best throughput count as fast as it
MAX_SETTINGS = 64


@dataclass(frozen=True)
class GridPoint:
    """One setting of the grid, the same for every tuned runner; None: as the runner was made."""

    max_batch_size: int | None
    max_latency_ms: float | None
    replicas: int | None

    def label(self) -> str:
        parts = []
        if self.max_batch_size is not None:
            parts.append(f"max_batch_size={self.max_batch_size}")
        if self.max_latency_ms is not None:
            parts.append(f"max_latency_ms={self.max_latency_ms:g}")
        if self.replicas is not None:
            parts.append(f"replicas={self.replicas}")
        return ", ".join(parts) or "as coded"


@dataclass
class Plan:
    """What `--tune` will do: the runners it sets, the grid, and what it leaves as coded and why."""

    runners: list[str]
    points: list[GridPoint]
    replicated: set[str]  # the runners whose replicas it sets (served, not autoscaling)
    notes: list[str] = field(default_factory=list)

    def code(self, point: GridPoint) -> dict[str, str]:
        """Per runner, the `to_runner` arguments that make it as `point` sets it."""
        out = {}
        for name, setting in self.settings(point).items():
            parts = [f"max_batch_size={setting.max_batch_size}"] if setting.max_batch_size is not None else []
            if setting.max_latency_ms is not None:
                parts.append(f"max_latency_ms={setting.max_latency_ms:g}")
            if setting.replicas is not None:
                parts.append(f"num_replicas={setting.replicas}")
            if parts:
                out[name] = ", ".join(parts)
        return out

    def settings(self, point: GridPoint) -> dict[str, RunnerSetting]:
        return {
            name: RunnerSetting(
                point.max_batch_size, point.max_latency_ms, point.replicas if name in self.replicated else None
            )
            for name in self.runners
        }


@dataclass
class Trial:
    """One setting's sweep, and the level that stands for it."""

    point: GridPoint
    levels: list[Level]
    applied_s: float
    chosen: Level | None
    error: str | None = None  # the service refused the setting: it was not measured


def plan_grid(
    service: Service,
    runner: str | None,
    batch_sizes: list[int],
    latencies_ms: list[float],
    replicas: list[int],
) -> Plan:
    runners = [r for r in service.runners if runner is None or r.name == runner]
    if runner is not None and not runners:
        raise InvalidArgument(
            f"--tune-runner {runner!r}: service {service.name!r} has runners {sorted(r.name for r in service.runners)}"
        )
    if not runners:
        raise InvalidArgument(f"service {service.name!r} has no runners: nothing to tune; measure it without --tune")
    notes = []
    pools = [r.name for r in runners if isinstance(r, VersionedRunner)]
    for name in pools:
        notes.append(f"Runner {name!r} serves every version of a model from a pool of replicas: it is not tuned.")
    runners = [r for r in runners if r.name not in pools]
    if not runners:
        raise InvalidArgument(f"runners {pools} serve every version of a model: --tune sets no such runner")
    batching = [r.name for r in runners if any(m.batchable for m in r.spec.methods.values())]
    if not batching:
        notes.append("No tuned runner has a batchable method: only replicas are tuned.")
    replicated = {r.name for r in runners if not r.embedded and not r.spec.autoscaling}
    for r in runners:
        if r.embedded:
            notes.append(
                f"Runner {r.name!r} is embedded in the ingress replica: its replicas are not tuned "
                "(serve it as its own deployment, embedded=False, to scale it apart)."
            )
        elif r.spec.autoscaling:
            notes.append(f"Runner {r.name!r} autoscales: its replicas stay with its autoscaling policy.")
    points = [
        GridPoint(size, latency, count)
        for size, latency, count in itertools.product(
            batch_sizes if batching else [None],
            latencies_ms if batching else [None],
            replicas if replicated else [None],
        )
    ]
    if points == [GridPoint(None, None, None)]:
        raise InvalidArgument("nothing to tune: no runner batches, and none has replicas of its own to set")
    if len(points) > MAX_SETTINGS:
        raise InvalidArgument(f"the grid has {len(points)} settings; at most {MAX_SETTINGS}: give fewer values")
    return Plan([r.name for r in runners], points, replicated, notes)


def stands_for(levels: list[Level], budget_ms: float | None) -> Level | None:
    """The level that stands for a sweep: its best within the budget, else its knee."""
    return best_within(levels, budget_ms) if budget_ms is not None else knee(levels)


def recommend(trials: list[Trial]) -> Trial | None:
    """Among the trials within `NEAR` of the highest throughput, the fewest replicas, then the
    lowest p99."""
    candidates = [t for t in trials if t.chosen is not None and not math.isnan(t.chosen.p99_ms)]
    if not candidates:
        return None
    top = max(t.chosen.throughput for t in candidates)  # type: ignore[union-attr]
    near = [t for t in candidates if t.chosen.throughput >= (1 - NEAR) * top]  # type: ignore[union-attr]
    return min(near, key=lambda t: (t.point.replicas or 0, t.chosen.p99_ms))  # type: ignore[union-attr]


def tune(
    plan: Plan,
    apply: Callable[[dict[str, RunnerSetting]], float],
    measure: Callable[[], list[Level]],
    budget_ms: float | None,
    on_setting: Callable[[int, GridPoint, float], None] = lambda i, point, seconds: None,
    on_failure: Callable[[int, GridPoint, str], None] = lambda i, point, error: None,
) -> tuple[list[Trial], bool]:
    """Each setting of the plan applied (`on_setting` hears of it, and may refuse it by raising),
    then measured by `measure()` (a sweep). A setting the service refuses is a trial with its
    `error`, and the next one is tried; Ctrl-C stops the grid there. Returns the trials, and
    whether the grid was interrupted: what was measured is still reported."""
    trials: list[Trial] = []
    try:
        for i, point in enumerate(plan.points):
            try:
                seconds = apply(plan.settings(point))
                on_setting(i, point, seconds)
            except RaystoreError as exc:
                trials.append(Trial(point, [], 0.0, None, error=str(exc)))
                on_failure(i, point, str(exc))
                continue
            levels = measure()
            trials.append(Trial(point, levels, seconds, stands_for(levels, budget_ms)))
    except KeyboardInterrupt:
        return trials, True
    return trials, False


def parse_numbers(text: str, what: str, whole: bool) -> list:
    """A list of numbers, `8,32,128`: whole ones >= 1, or any > 0."""
    values = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            value = int(part) if whole else float(part)
        except ValueError:
            value = None
        if value is None or (whole and value < 1) or (not whole and not (0 < value < math.inf)):
            kind = "whole numbers >= 1" if whole else "numbers > 0"
            raise InvalidArgument(f"{what} takes {kind}, separated by commas; got {part!r}")
        values.append(value)
    if not values:
        raise InvalidArgument(f"{what} needs at least one value")
    return list(dict.fromkeys(values))  # each once, in the order given
