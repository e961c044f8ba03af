"""What a sweep found: a table on the terminal, one CSV row or JSON object per level, and the
level to pick (the best within a latency budget, or the knee)."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from raystore._private.perf.service_stats import busiest
from raystore._private.perf.windows import Level, best_within, failed_share, knee

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
        elif failed_share(level) > 0.01:
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
            writer.writerow(row)


def write_json(levels: list[Level], path: str, target: dict[str, Any], budget_ms: float | None) -> None:
    best = best_within(levels, budget_ms) if budget_ms is not None else None
    point = knee(levels)
    document = {
        "target": target,
        "levels": [
            {key: value if key == "batching" else _plain(value) for key, value in level.as_dict().items()}
            for level in levels
        ],
        "latency_budget_ms": budget_ms,
        "best_within_budget": best.load if best is not None else None,
        "knee": point.load if point is not None else None,
    }
    Path(path).write_text(json.dumps(document, indent=2) + "\n")


def _plain(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 3)
    return value


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.1f}"
