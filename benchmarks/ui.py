"""Benchmark: the console's models page for a large store.

    .venv/bin/python benchmarks/ui.py [--versions 2000] [--names 100] [--rounds 5]

Saves `--versions` small versions under `--names` names into a temporary store (labels and
metadata on each), then times, in this process through the ASGI app (no network):

- the models page on a console just started (every `model.yaml` and `manifest.json` read once);
- the models page again (the catalog's cache: one listing and one stat per version);
- the models page filtered by a label, and sorted by size;

against a baseline measured in the same run: `raystore.models.list()`, the library reading every
version's `model.yaml` (what `raystore models list` does). Medians of `--rounds`; the target is
under 1 s for the models page of 2,000 versions under 100 names.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--versions", type=int, default=2000)
    parser.add_argument("--names", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="raystore-ui-bench-") as home:
        os.environ["RAYSTORE_HOME"] = home
        from starlette.testclient import TestClient

        import raystore
        from raystore._private.console.app import console_app
        from raystore._private.store import default_store

        started = time.perf_counter()
        for i in range(args.versions):
            raystore.picklable_model.save_model(
                f"model_{i % args.names:03d}",
                {"weights": [i] * 10},
                labels={"owner": f"team_{i % 7}", "stage": "prod" if i % 5 == 0 else "dev"},
                metadata={"accuracy": 0.9 + (i % 10) / 100, "dataset": {"version": f"2024{i % 12:02d}01"}},
            )
        print(f"saved {args.versions} versions under {args.names} names in {time.perf_counter() - started:.1f} s")

        def timed(call) -> float:
            start = time.perf_counter()
            call()
            return time.perf_counter() - start

        def page(client: TestClient, query: str = "") -> None:
            response = client.get(f"/{query}")
            assert response.status_code == 200 and "model_0" in response.text

        results: dict[str, list[float]] = {"models.list() (baseline)": [], "page, console just started": []}
        results.update({"page again (cached)": [], "page, label filter": [], "page, sorted by size": []})
        for _ in range(args.rounds):
            results["models.list() (baseline)"].append(timed(raystore.models.list))
            client = TestClient(console_app(default_store()))
            results["page, console just started"].append(timed(lambda c=client: page(c)))
            results["page again (cached)"].append(timed(lambda c=client: page(c)))
            results["page, label filter"].append(timed(lambda c=client: page(c, "?label=owner%3Dteam_3")))
            results["page, sorted by size"].append(timed(lambda c=client: page(c, "?sort=size")))

    baseline = statistics.median(results["models.list() (baseline)"])
    print()
    print(f"Console models page: {args.versions} versions under {args.names} names, median of {args.rounds} rounds")
    print(f"{'what':<30} {'seconds':>8} {'ratio':>7}")
    for what, times in results.items():
        median = statistics.median(times)
        print(f"{what:<30} {median:>8.3f} {median / baseline:>7.2f}")


if __name__ == "__main__":
    main()
