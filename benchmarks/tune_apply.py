"""Benchmark: what `raystore perf --tune` saves by applying each setting in place, in one run.

    .venv/bin/python benchmarks/tune_apply.py [--rounds 3]

Serves the composition example (two runners in deployments of their own) on a temporary store,
the way `--tune` does (`deploy.tunable`), and times, `--rounds` times each:

- the baseline: starting the service until it is ready, what a restart per setting would cost
  (Ray, Serve, every replica and its model);
- a batch setting applied in place (`user_config` -> each replica's `reconfigure`);
- a replica added to the classifier, then taken away (the others keep running, models loaded).

Each apply is timed until Serve reports the replicas running and the service's console reports
the batch settings. Prints the medians and their ratios to the baseline. The server is stopped
through the end of its input (and SIGINT after, to the process this script started).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "composition"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from raystore._private.deploy.tunable import RunnerSetting
    from raystore._private.perf.target import tunable_service

    with tempfile.TemporaryDirectory(prefix="raystore-tune-bench-") as home:
        os.environ["RAYSTORE_HOME"] = home
        subprocess.run([sys.executable, str(EXAMPLE / "train.py")], check=True, capture_output=True, cwd=EXAMPLE)
        starts, batch, grow, shrink = [], [], [], []
        for round_ in range(args.rounds):
            started = time.monotonic()
            with tunable_service("service:svc", "/", str(EXAMPLE)) as service:
                starts.append(time.monotonic() - started)
                for size in (8, 32):
                    batch.append(service.apply({"classifier": RunnerSetting(size, 10.0 + round_)}))
                grow.append(service.apply({"classifier": RunnerSetting(replicas=2)}))
                shrink.append(service.apply({"classifier": RunnerSetting(replicas=1)}))
            print(f"round {round_ + 1}: start {starts[-1]:.2f} s, batch {batch[-2]:.2f}/{batch[-1]:.2f} s, "
                  f"+1 replica {grow[-1]:.2f} s, -1 replica {shrink[-1]:.2f} s", file=sys.stderr)  # fmt: skip
    baseline = statistics.median(starts)
    print(f"\n{'what':<40} {'median s':>9} {'ratio':>7}")
    for name, values in (
        ("service started until ready (baseline)", starts),
        ("batch setting applied in place", batch),
        ("one replica added", grow),
        ("one replica taken away", shrink),
    ):
        median = statistics.median(values)
        print(f"{name:<40} {median:>9.2f} {median / baseline:>7.2f}")


if __name__ == "__main__":
    main()
