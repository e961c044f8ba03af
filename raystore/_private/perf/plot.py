"""`--plot FILE.png`: throughput against p99 latency, a point per level, the chosen level marked;
below it, the service's mean batch size per level where it told (a raystore service). With
`--tune`, a curve per setting, and below, each setting's chosen throughput."""

from __future__ import annotations

import math

from raystore._private.perf.service_stats import busiest
from raystore._private.perf.tune import Trial
from raystore._private.perf.windows import Level
from raystore.exceptions import MissingDependency


def _pyplot():  # type: ignore[no-untyped-def]
    try:
        import matplotlib
    except ImportError:
        raise MissingDependency("--plot draws with matplotlib: pip install 'raystore[perf]'") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def plot(levels: list[Level], path: str, title: str, chosen: Level | None, budget_ms: float | None) -> None:
    plt = _pyplot()

    batch_sizes = [busiest(level.batching) for level in levels]
    with_batches = any(b is not None for b in batch_sizes)
    figure, axes = plt.subplots(2 if with_batches else 1, 1, figsize=(8, 7 if with_batches else 4.5), squeeze=False)
    top = axes[0][0]
    shown = [level for level in levels if not math.isnan(level.p99_ms)]
    top.plot([level.throughput for level in shown], [level.p99_ms for level in shown], marker="o")
    for level in shown:
        top.annotate(str(level.load), (level.throughput, level.p99_ms), textcoords="offset points", xytext=(4, 4))
    if budget_ms is not None:
        top.axhline(budget_ms, linestyle="--", color="grey", label=f"p99 budget {budget_ms:g} ms")
    if chosen is not None and not math.isnan(chosen.p99_ms):
        top.plot([chosen.throughput], [chosen.p99_ms], marker="*", markersize=16, color="crimson",
                 label=f"chosen: load {chosen.load}")  # fmt: skip
    top.set_xlabel("throughput (requests/s)")
    top.set_ylabel("p99 latency (ms)")
    top.set_title(title)
    top.grid(alpha=0.3)
    if budget_ms is not None or chosen is not None:
        top.legend()
    if with_batches:
        bottom = axes[1][0]
        loads = [str(level.load) for level in levels]
        means = [b[1]["mean_batch_size"] if b is not None else 0.0 for b in batch_sizes]
        bottom.bar(loads, means)
        name = next(b[0] for b in batch_sizes if b is not None)
        bottom.set_xlabel("load")
        bottom.set_ylabel(f"mean batch size ({name})")
        bottom.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_tune(trials: list[Trial], path: str, title: str, recommended: Trial | None, budget_ms: float | None) -> None:
    plt = _pyplot()
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(9, 8))
    for trial in trials:
        shown = [level for level in trial.levels if not math.isnan(level.p99_ms)]
        style = {"linewidth": 2.5} if trial is recommended else {"linewidth": 1, "alpha": 0.8}
        top.plot([lv.throughput for lv in shown], [lv.p99_ms for lv in shown], marker="o", label=trial.point.label(),
                 **style)  # fmt: skip
    if budget_ms is not None:
        top.axhline(budget_ms, linestyle="--", color="grey", label=f"p99 budget {budget_ms:g} ms")
    if recommended is not None and recommended.chosen is not None:
        level = recommended.chosen
        top.plot([level.throughput], [level.p99_ms], marker="*", markersize=16, color="crimson", label="recommended")
    top.set_xlabel("throughput (requests/s)")
    top.set_ylabel("p99 latency (ms)")
    top.set_title(title)
    top.grid(alpha=0.3)
    top.legend(fontsize="x-small")
    labels = [trial.point.label().replace(", ", "\n") for trial in trials]
    heights = [trial.chosen.throughput if trial.chosen is not None else 0.0 for trial in trials]
    colours = ["crimson" if trial is recommended else "tab:blue" for trial in trials]
    bars = bottom.bar(range(len(trials)), heights, color=colours)
    for bar, trial in zip(bars, trials):  # why: how full the batches ran at that level
        top_method = busiest(trial.chosen.batching) if trial.chosen is not None else None
        if top_method is not None:
            bottom.annotate(f"batch {top_method[1]['mean_batch_size']:.1f}", (bar.get_x() + bar.get_width() / 2,
                            bar.get_height()), ha="center", textcoords="offset points", xytext=(0, 3), fontsize="small")  # fmt: skip
    bottom.set_xticks(range(len(trials)), labels, fontsize="x-small")
    bottom.set_ylabel("chosen level's throughput (req/s)")
    bottom.grid(alpha=0.3, axis="y")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
