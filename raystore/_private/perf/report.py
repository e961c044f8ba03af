"""What a sweep found: a table on the terminal, one CSV row or JSON object per level, and the
level to pick (the best within a latency budget, or the knee); with `--tune`, the same for each
setting, and the setting to pick."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

from raystore._private.perf.service_stats import busiest
from raystore._private.perf.tune import NEAR, Plan, Trial
from raystore._private.perf.windows import MAX_FAILED_SHARE, Level, best_within, failed_share, knee

COLUMNS = (
    "load",
    "throughput",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "mean_ms",
    "requests",
    "errors",
    "overloaded",
    "windows",
    "steady",
    "generator_cpu",
    "offered",
    "batch_method",
    "batch_size_mean",
    "queue_wait_p99_ms",
    "batch_exec_p50_ms",
)
SATURATED_CPU = 0.9  # the load generator's share of a core past which it may be the bottleneck


def table(levels: list[Level], title: str) -> Any:
    from rich.table import Table

    out = Table(title=title)
    names = ("load", "sent/s", "req/s", "p50 ms", "p90 ms", "p95 ms", "p99 ms", "mean ms", "errors", "503s", "windows")
    batched = any(level.batching for level in levels)
    if batched:
        names = (*names, "batch", "queue p99")
    for name in names:
        out.add_column(name, justify="right", no_wrap=True)
    for level in levels:
        extra = []
        if batched:
            top = busiest(level.batching)
            extra = [f"{top[1]['mean_batch_size']:.1f}", f"{top[1]['queue_wait_p99_ms']:.1f} ms"] if top else ["", ""]
        out.add_row(
            str(level.load),
            f"{level.offered:.1f}",
            f"{level.throughput:.1f}",
            *(_ms(v) for v in (level.p50_ms, level.p90_ms, level.p95_ms, level.p99_ms, level.mean_ms)),
            str(level.errors),
            str(level.overloaded),
            f"{level.windows}" + ("" if level.steady else " (not steady)"),
            *extra,
        )
    return out


def verdict(levels: list[Level], budget_ms: float | None) -> list[str]:
    """The lines that say which level to pick, and what to doubt."""
    lines = []
    for level in levels:
        if level.requests == 0:
            lines.append(
                f"Load {level.load}: no request succeeded ({level.errors} errors, {level.overloaded} 503s); "
                "check the target and the input (a redirect is an error here: give the final URL)."
            )
        elif failed_share(level) > MAX_FAILED_SHARE:
            lines.append(
                f"Load {level.load}: {failed_share(level):.0%} of requests failed or were shed "
                f"({level.errors} errors, {level.overloaded} 503s); it is no candidate."
            )
    if budget_ms is not None:
        best = best_within(levels, budget_ms)
        if best is None:
            lines.append(f"No level kept p99 within {budget_ms:g} ms; lower the load, or add replicas or batching.")
        else:
            lines.append(
                f"Best within p99 <= {budget_ms:g} ms: load {best.load}, {best.throughput:.1f} req/s "
                f"(p99 {best.p99_ms:.1f} ms)."
            )
    else:
        point = knee(levels)
        if point is not None and point is levels[-1] and len([lv for lv in levels if lv.requests]) > 1:
            lines.append(
                f"No knee yet: throughput still grew at the highest load ({point.load}: {point.throughput:.1f} req/s, "
                f"p99 {point.p99_ms:.1f} ms); try higher loads."
            )
        elif point is not None:
            lines.append(
                f"Knee: load {point.load}, {point.throughput:.1f} req/s (p99 {point.p99_ms:.1f} ms); "
                "past it throughput grows by less than 5% a step."
            )
    unsteady = [str(level.load) for level in levels if not level.steady]
    if unsteady:
        lines.append(f"Not steady within the windows allowed: load {', '.join(unsteady)} (raise --max-trials).")
    busy = [str(level.load) for level in levels if level.generator_cpu >= SATURATED_CPU]
    if busy:
        lines.append(f"The load generator used a whole core at load {', '.join(busy)}: it may be the bottleneck there.")
    return lines


def write_csv(levels: list[Level], path: str) -> None:
    with Path(path).open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        writer.writeheader()
        for level in levels:
            writer.writerow(_row(level))


def _row(level: Level) -> dict[str, Any]:
    row = {key: _plain(value) for key, value in level.as_dict().items() if key != "batching"}
    top = busiest(level.batching)
    if top is not None:
        name, stats = top
        row.update(
            batch_method=name,
            batch_size_mean=round(stats["mean_batch_size"], 3),
            queue_wait_p99_ms=round(stats["queue_wait_p99_ms"], 3),
            batch_exec_p50_ms=round(stats["execution_p50_ms"], 3),
        )
    return row


def write_json(levels: list[Level], path: str, target: dict[str, Any], budget_ms: float | None) -> None:
    document = {"target": target, **_sweep_document(levels, budget_ms)}
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def _sweep_document(levels: list[Level], budget_ms: float | None) -> dict[str, Any]:
    best = best_within(levels, budget_ms) if budget_ms is not None else None
    point = knee(levels)
    return {
        "levels": [
            {key: value if key == "batching" else _plain(value) for key, value in level.as_dict().items()}
            for level in levels
        ],
        "latency_budget_ms": budget_ms,
        "best_within_budget": best.load if best is not None else None,
        "knee": point.load if point is not None else None,
    }


# ---- --tune: a sweep per setting ----------------------------------------------------------------

TUNE_COLUMNS = ("max_batch_size", "max_latency_ms", "replicas", *COLUMNS, "chosen", "recommended")


def tune_table(trials: list[Trial], recommended: Trial | None, title: str) -> Any:
    from rich.table import Table

    out = Table(title=title)
    names = ("setting", "applied", "load", "req/s", "p50 ms", "p99 ms", "batch", "errors", "503s", "")
    for name in names:
        out.add_column(name, justify="left" if name == "setting" else "right", no_wrap=True)
    for trial in trials:
        level, note = trial.chosen, "recommended" if trial is recommended else ""
        if trial.error is not None:
            note = "refused by the service"
        elif level is None:  # no level qualified: the fastest one, and why it does not count
            level = max((lv for lv in trial.levels if lv.requests), key=lambda lv: lv.throughput, default=None)
            if level is not None:
                note = "failed or shed > 1%" if failed_share(level) > MAX_FAILED_SHARE else "p99 over budget"
        top = busiest(level.batching) if level is not None else None
        numbers = (
            [str(level.load), f"{level.throughput:.1f}", _ms(level.p50_ms), _ms(level.p99_ms)]
            if level is not None
            else ["-", "-", "-", "-"]
        )
        out.add_row(
            trial.point.label(),
            f"{trial.applied_s:.1f} s" if trial.error is None else "-",
            *numbers,
            f"{top[1]['mean_batch_size']:.1f}" if top else "",
            str(level.errors) if level is not None else "-",
            str(level.overloaded) if level is not None else "-",
            note,
        )
    return out


def tune_verdict(trials: list[Trial], recommended: Trial | None, budget_ms: float | None, plan: Plan) -> list[str]:
    """What to pick, in words and in code; and the settings the service refused."""
    lines = [f"The service refused {t.point.label()}: {t.error}" for t in trials if t.error is not None]
    stands = f"its best level with p99 <= {budget_ms:g} ms" if budget_ms is not None else "its knee"
    if recommended is None or recommended.chosen is None:
        if budget_ms is not None:
            return [
                *lines,
                f"No setting kept p99 within {budget_ms:g} ms at any load; raise the budget or lower the loads.",
            ]
        return [*lines, "No setting answered without failures at any load; check the target and the input."]
    level = recommended.chosen
    top = max(t.chosen.throughput for t in trials if t.chosen is not None)
    lines += [
        f"Recommended: {recommended.point.label()}: {level.throughput:.1f} req/s at load {level.load} "
        f"(p99 {level.p99_ms:.1f} ms).",
        f"Each setting is judged by {stands}; of those within {NEAR:.0%} of the best throughput "
        f"({top:.1f} req/s), this one has the fewest replicas, then the lowest p99.",
    ]
    for runner, arguments in plan.code(recommended.point).items():
        lines.append(f"In code, for runner {runner!r}: .to_runner(..., {arguments})")
    return lines


def write_tune_csv(trials: list[Trial], path: str, recommended: Trial | None) -> None:
    """A row per setting and level; `chosen`: the level that stands for its setting."""
    with Path(path).open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=TUNE_COLUMNS)
        writer.writeheader()
        for trial in trials:
            setting = {
                "max_batch_size": trial.point.max_batch_size,
                "max_latency_ms": trial.point.max_latency_ms,
                "replicas": trial.point.replicas,
            }
            for level in trial.levels:
                chosen = level is trial.chosen
                writer.writerow(
                    {**setting, **_row(level), "chosen": chosen, "recommended": chosen and trial is recommended}
                )


def write_tune_json(
    trials: list[Trial],
    path: str,
    target: dict[str, Any],
    budget_ms: float | None,
    recommended: Trial | None,
    plan: Plan,
) -> None:
    document = {
        "target": target,
        "runners": plan.runners,  # the runners each setting was applied to
        "replicas_of": sorted(plan.replicated),  # those whose replicas it set
        "latency_budget_ms": budget_ms,
        "settings": [
            {
                "setting": asdict(trial.point),
                "applied_s": round(trial.applied_s, 3),
                "error": trial.error,
                "chosen": trial.chosen.load if trial.chosen is not None else None,
                **_sweep_document(trial.levels, budget_ms),
            }
            for trial in trials
        ],
        "recommended": asdict(recommended.point) if recommended is not None else None,
        "recommended_code": plan.code(recommended.point) if recommended is not None else {},
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    return value


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"
