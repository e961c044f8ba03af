"""Closed-loop HTTP load with `wrk` (Debian package), shared by the HTTP benchmarks."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
from pathlib import Path


def wrk(
    url: str, body: str | bytes, duration: float, connections: int, headers: dict[str, str] | None = None
) -> tuple[float, float, float, int]:
    """POST `body` (JSON unless `headers` say otherwise) to `url` from `connections` connections
    for `duration` seconds, each sending again as soon as it has its answer. Returns (requests/s,
    p50 ms, p99 ms, requests)."""
    folder = Path(tempfile.mkdtemp())
    (folder / "body").write_bytes(body.encode() if isinstance(body, str) else body)
    lines = [
        'wrk.method = "POST"',
        f'local f = io.open({json.dumps(str(folder / "body"))}, "rb")',
        'wrk.body = f:read("*all")',
        "f:close()",
    ]
    for name, value in ({"Content-Type": "application/json"} | (headers or {})).items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    script = folder / "post.lua"
    script.write_text("\n".join(lines) + "\n")
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration:.0f}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise RuntimeError(f"{url}: {non2xx.group(1)} failed responses\n{out}")

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return rps, percentile("50"), percentile("99"), requests
