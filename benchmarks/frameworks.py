"""Benchmark: XGBoost, LightGBM, ONNX and Transformers models served by raystore runners (adaptive
batching) against the same model called directly, one request at a time.

    .venv/bin/python benchmarks/frameworks.py [--duration SECONDS] [--only xgboost,onnx]

Models, made here: XGBoost and LightGBM boosters of 200 trees (depth 6) on 32 features, an ONNX
MLP (32 -> 256 -> 256 -> 3, from scikit-learn through skl2onnx), and a small BERT text-
classification pipeline (2 layers, hidden 64) on short sentences.

- served: 64 closed-loop callers in this process, one row per call, through a DeploymentHandle to
  an entry deployment that calls the model's deployment: a raw Serve deployment that calls the
  model directly (the baseline) against raystore's runner (`to_runner()`, default batching), each
  with one CPU. Targets: rows/s ratio >= 0.9 at equal or better p99.
- in process: the model called directly row after row, against `to_runner().init_local()` with
  64 concurrent one-row callers on one event loop.

The benchmark starts and stops its own Ray instance and uses a store in a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from closed_loop import closed_loop

CALLERS = 64
FEATURES = 32
WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "great", "awful", "plot"]
SENTENCE = ["the movie was good the plot was great"]


def make_models() -> dict[str, tuple[Any, Any, str]]:
    """framework -> (the model as trained, one request's input, the signature to call)."""
    import lightgbm as lgb
    import xgboost as xgb
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, FEATURES)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int) + (x[:, 2] > 1)
    row = x[:1]
    booster = xgb.train({"max_depth": 6, "objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, label=y), 200)
    gbm = lgb.train({"objective": "multiclass", "num_class": 3, "max_depth": 6, "verbose": -1}, lgb.Dataset(x, y), 200)
    mlp = MLPClassifier(hidden_layer_sizes=(256, 256), max_iter=20).fit(x, y)
    graph = to_onnx(mlp, row, options={"zipmap": False})
    return {
        "xgboost": (booster, row, "predict"),
        "lightgbm": (gbm, row, "predict"),
        "onnx": (graph, row, "run"),
        "transformers": (_bert_pipeline(), SENTENCE, "__call__"),
    }


def _bert_pipeline() -> Any:
    import torch
    import transformers

    folder = tempfile.mkdtemp(prefix="bench-vocab-")
    with open(os.path.join(folder, "vocab.txt"), "w") as f:
        f.write("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file=os.path.join(folder, "vocab.txt"))
    config = transformers.BertConfig(
        vocab_size=len(WORDS), hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    return transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")


def direct_call(framework: str) -> Callable[[Any, Any], Any]:
    """How the raw deployment calls a model loaded by raystore's `load_model`."""
    if framework == "onnx":
        return lambda session, r: session.run(None, {session.get_inputs()[0].name: r})
    if framework == "xgboost":
        import xgboost as xgb

        return lambda booster, r: booster.predict(xgb.DMatrix(r))
    return lambda model, r: model(r) if framework == "transformers" else model.predict(r)


def sequential(call: Callable[[Any], Any], x: Any, duration_s: float) -> tuple:
    """(rows/s, p50 ms, p99 ms) of one caller calling the model directly, back to back."""
    latencies = []
    stop_at = time.perf_counter() + duration_s
    while (now := time.perf_counter()) < stop_at:
        call(x)
        latencies.append(time.perf_counter() - now)
    latencies.sort()
    p = lambda q: 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]
    return len(latencies) / duration_s, p(0.50), p(0.99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--only", default="xgboost,lightgbm,onnx,transformers")
    args = parser.parse_args()
    os.environ["RAYSTORE_HOME"] = tempfile.mkdtemp(prefix="bench-frameworks-")
    import ray
    from ray import serve

    import raystore

    chosen = args.only.split(",")
    models = {name: spec for name, spec in make_models().items() if name in chosen}
    saved = {name: getattr(raystore, name).save_model(f"bench_{name}", spec[0]) for name, spec in models.items()}

    @serve.deployment(ray_actor_options={"num_cpus": 1}, max_ongoing_requests=256)
    class Direct:
        """The baseline: the model loaded as raystore's load_model gives it, called per request."""

        def __init__(self, framework: str, tag: str):
            self.model = getattr(raystore, framework).load_model(tag)
            self.call = direct_call(framework)

        def __call__(self, x: Any) -> Any:
            return self.call(self.model, x)

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
    class DirectEntry:
        def __init__(self, model: Any):
            self.model = model

        async def __call__(self, x: Any) -> Any:
            return await self.model.remote(x)

    @serve.deployment(ray_actor_options={"num_cpus": 0.5}, max_ongoing_requests=256)
    class RunnerEntry:
        def __init__(self, runner: Any, method: str):
            self.signature = getattr(runner, method)

        async def __call__(self, x: Any) -> Any:
            return await self.signature.async_run(x)

    results: dict[tuple[str, str], tuple] = {}
    for name, (_, x, method) in models.items():  # in process, before Ray takes the CPUs
        model = getattr(raystore, name).load_model(saved[name].tag)
        call = direct_call(name)
        results[(name, "in process: direct")] = sequential(lambda r, m=model, c=call: c(m, r), x, args.duration)
        runner = saved[name].to_runner()
        runner.init_local()
        signature = getattr(runner, method)
        results[(name, "in process: raystore")] = asyncio.run(
            closed_loop(signature.async_run, x, CALLERS, args.duration)
        )

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        for name, (_, x, method) in models.items():
            app = DirectEntry.bind(Direct.bind(name, str(saved[name].tag)))
            handle = serve.run(app, name=f"direct_{name}", route_prefix=None)
            results[(name, "served: direct")] = asyncio.run(closed_loop(handle.remote, x, CALLERS, args.duration))
            serve.delete(f"direct_{name}")
            runner = saved[name].to_runner(resources={"num_cpus": 1})
            handle = serve.run(RunnerEntry.bind(runner.bind(), method), name=f"runner_{name}", route_prefix=None)
            results[(name, "served: raystore")] = asyncio.run(closed_loop(handle.remote, x, CALLERS, args.duration))
            serve.delete(f"runner_{name}")
    finally:
        serve.shutdown()
        ray.shutdown()

    print(f"\n{CALLERS} callers, one row per call, {args.duration:.0f} s per row of the table\n")
    header = f"{'framework':<13} {'variant':<21} {'rows/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'rows/s ratio':>12} {'p99 ratio':>9}"
    print(header)
    print("-" * len(header))
    for name in models:
        for mode in ("in process", "served"):
            base = results[(name, f"{mode}: direct")]
            for variant in ("direct", "raystore"):
                rps, p50, p99 = results[(name, f"{mode}: {variant}")]
                ratios = "" if variant == "direct" else f"{rps / base[0]:>12.2f} {p99 / base[2]:>9.2f}"
                print(f"{name:<13} {mode + ': ' + variant:<21} {rps:>8.0f} {p50:>8.2f} {p99:>8.2f} {ratios}")
    print("\ntargets (served): rows/s ratio >= 0.9 and p99 ratio <= 1.0 (raystore / direct)")
    print("in process, 'direct' is one caller calling row after row: its p99 is one call's, not a queue's")


if __name__ == "__main__":
    main()
