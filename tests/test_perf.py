"""`raystore perf`: the sweep's arithmetic, and the command against real HTTP servers (a service's
ASGI app and a shedding endpoint, served by uvicorn in this process)."""

import asyncio
import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import served

import raystore
from raystore._private.perf.levels import parse_levels
from raystore._private.perf.report import COLUMNS
from raystore._private.perf.windows import Level, Window, best_within, knee, steady
from raystore.exceptions import InvalidArgument

RAYSTORE = str(Path(sys.executable).with_name("raystore"))


def test_levels_are_lists_or_ranges():
    assert parse_levels("1,4,16") == [1, 4, 16]
    assert parse_levels("1:256:x2") == [1, 2, 4, 8, 16, 32, 64, 128, 256]
    assert parse_levels("1:10:x1.5") == [1, 2, 3, 4, 6, 9]
    assert parse_levels("8:32:+8") == [8, 16, 24, 32]
    assert parse_levels("1:4") == [1, 2, 4]
    for bad in ("", "0,4", "a,b", "4:1", "1:8:x1", "1:8:*2"):
        with pytest.raises(InvalidArgument, match="--concurrency"):
            parse_levels(bad)


def _window(throughput: float, p99: float, seconds: float = 1.0) -> Window:
    return Window(duration_s=seconds, latencies_ms=[p99] * int(throughput * seconds))


def test_a_level_is_steady_when_its_last_three_windows_agree():
    agreeing = [_window(50, 80), _window(100, 20), _window(102, 21), _window(98, 20)]
    assert steady(agreeing, 0.10) and not steady(agreeing[:3], 0.10)
    assert not steady([_window(100, 20), _window(100, 20), _window(100, 40)], 0.10)  # p99 doubled
    assert not steady([Window(1.0), Window(1.0), Window(1.0)], 0.10)  # nothing answered


def test_the_knee_and_the_best_level_within_a_budget():
    def level(load, throughput, p99):
        return Level(load, 3, True, throughput, 1, 1, 1, p99, 1, 100, 0, 0, 0.1)

    levels = [level(1, 100, 5), level(4, 380, 9), level(16, 700, 30), level(64, 720, 120)]
    assert knee(levels).load == 16  # 64 adds under 5%
    assert best_within(levels, 50).load == 16 and best_within(levels, 8).load == 1
    assert best_within(levels, 1) is None
    summary = Level.of(8, [_window(10, 4), _window(10, 8), _window(10, 6)], True)
    assert summary.throughput == 10 and summary.p99_ms == 8 and summary.requests == 30
    assert math.isnan(Level.of(2, [Window(1.0)], False).p99_ms)


def _iris_app(iris_clf, v2=False):
    from raystore._private.service.app import ServiceApp

    saved = raystore.sklearn.save_model("iris_clf", iris_clf, signatures={"predict": {"batchable": True}})
    runner = raystore.models.get(saved.tag).to_runner(embedded=True)
    svc = raystore.Service("iris_perf", runners=[runner], v2=v2)

    @svc.api(input=raystore.io.NumpyNdarray(shape=(-1, 4), enforce_shape=True), output=raystore.io.NumpyNdarray())
    async def classify(x):
        return await runner.predict.async_run(x)

    runner.init_local()

    class Metrics:
        def record(self, *args):
            pass

    async def ready():
        return True

    return ServiceApp(svc, ready, Metrics()), runner


def _perf(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([RAYSTORE, "perf", *args], capture_output=True, text=True, timeout=timeout)


def test_a_sweep_writes_a_row_per_level_and_picks_a_level_within_the_budget(iris_clf, tmp_path):
    body = tmp_path / "body.json"
    body.write_text("[[5.9, 3.0, 5.1, 1.8]]")
    app, runner = _iris_app(iris_clf)
    try:
        with served(app) as url:
            out = _perf(
                f"{url}/classify",
                "--input",
                str(body),
                "--concurrency",
                "1,4",
                "--window",
                "0.5",
                "--max-trials",
                "4",
                "--latency-budget-ms",
                "1000",
                "--csv",
                str(tmp_path / "levels.csv"),
                "--json",
                str(tmp_path / "levels.json"),
                "--plot",
                str(tmp_path / "levels.png"),
            )
    finally:
        runner.destroy_local()
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "levels.csv").open()))
    assert [r["load"] for r in rows] == ["1", "4"] and tuple(rows[0]) == COLUMNS
    for row in rows:
        assert float(row["throughput"]) > 0 and row["errors"] == "0" and row["overloaded"] == "0"
        assert float(row["p50_ms"]) <= float(row["p99_ms"])
    document = json.loads((tmp_path / "levels.json").read_text())
    assert document["target"]["url"].endswith("/classify") and len(document["levels"]) == 2
    best = document["best_within_budget"]
    chosen = next(level for level in document["levels"] if level["load"] == best)
    assert chosen["p99_ms"] <= 1000
    assert chosen["throughput"] == max(level["throughput"] for level in document["levels"] if level["p99_ms"] <= 1000)
    assert "Best within p99 <= 1000 ms: load" in out.stdout and "req/s" in out.stdout
    # the service's own batch statistics for each level, from its console's /ui/service.json
    for row, level in zip(rows, document["levels"]):
        assert row["batch_method"] == "iris_clf.predict" and float(row["batch_size_mean"]) >= 1
        batching = level["batching"]["iris_clf.predict"]
        assert batching["requests"] >= level["requests"] and batching["from"] == "this replica"
        assert batching["batches"] <= batching["requests"]
    assert "queue p99" in out.stdout
    png = (tmp_path / "levels.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 10_000


def test_503s_under_overload_are_counted_apart_from_errors(tmp_path):
    """An endpoint that takes two requests at a time and sheds the rest with 503."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    in_flight = [0]

    async def endpoint(request):
        await request.body()
        if in_flight[0] >= 2:
            return PlainTextResponse("busy", status_code=503)
        in_flight[0] += 1
        try:
            await asyncio.sleep(0.02)
            return PlainTextResponse("ok")
        finally:
            in_flight[0] -= 1

    body = tmp_path / "x.txt"
    body.write_text("x")
    with served(Starlette(routes=[Route("/work", endpoint, methods=["POST"])])) as url:
        out = _perf(f"{url}/work", "--input", str(body), "--concurrency", "8", "--window", "0.5",
                    "--max-trials", "3", "--csv", str(tmp_path / "o.csv"))  # fmt: skip
    assert out.returncode == 0, out.stderr
    (row,) = list(csv.DictReader((tmp_path / "o.csv").open()))
    assert int(row["overloaded"]) > 0 and row["errors"] == "0" and float(row["throughput"]) > 0


def test_a_bad_target_input_or_option_is_a_clear_error(tmp_path):
    from raystore._private.deploy.local import free_port

    body = tmp_path / "body.json"
    body.write_text("[[1, 2, 3, 4]]")
    unreachable = _perf(f"http://127.0.0.1:{free_port()}/classify", "--input", str(body))
    assert unreachable.returncode == 1 and "cannot reach" in unreachable.stderr
    missing = _perf("http://127.0.0.1:1/x", "--input", str(tmp_path / "nope.json"))
    assert missing.returncode == 1 and "no such file" in missing.stderr
    levels = _perf("http://127.0.0.1:1/x", "--input", str(body), "--concurrency", "0,4")
    assert levels.returncode == 1 and "every level must be a whole number >= 1" in levels.stderr
    not_a_url = _perf("127.0.0.1:3000/classify", "--input", str(body))
    assert not_a_url.returncode == 1 and "http:// or https://" in not_a_url.stderr


def test_a_target_that_refuses_the_input_says_why(iris_clf, tmp_path):
    body = tmp_path / "wrong.json"
    body.write_text("[[1, 2]]")  # the API wants 4 features
    app, runner = _iris_app(iris_clf)
    try:
        with served(app) as url:
            out = _perf(f"{url}/classify", "--input", str(body))
    finally:
        runner.destroy_local()
    assert out.returncode == 1 and "answered 400" in out.stderr and "shape" in out.stderr


def test_open_loop_offers_the_rate_asked_for(tmp_path):
    """Against a fast endpoint: evenly spaced arrivals within 5% of the rate, Poisson ones (random
    by nature, over about 1,200 arrivals) within 10%."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def fast(request):
        await request.body()
        return PlainTextResponse("ok")

    body = tmp_path / "x.txt"
    body.write_text("x")
    with served(Starlette(routes=[Route("/fast", fast, methods=["POST"])])) as url:
        for distribution, tolerance in (("constant", 0.05), ("poisson", 0.10)):
            report = tmp_path / f"{distribution}.json"
            out = _perf(f"{url}/fast", "--input", str(body), "--rate", "400", "--distribution", distribution,
                        "--window", "1", "--max-trials", "3", "--stability", "50", "--json", str(report))  # fmt: skip
            assert out.returncode == 0, out.stderr
            (level,) = json.loads(report.read_text())["levels"]
            assert json.loads(report.read_text())["target"]["mode"] == "rate"
            assert abs(level["offered"] - 400) <= tolerance * 400, (distribution, level)
            assert level["errors"] == 0 and abs(level["throughput"] - level["offered"]) <= 0.05 * 400
    both = _perf(f"{url}/fast", "--input", str(body), "--rate", "10", "--concurrency", "4")
    assert both.returncode == 1 and "not both" in both.stderr


@pytest.mark.ray
def test_a_module_target_is_started_measured_and_stopped(tmp_path):
    import socket

    body = tmp_path / "x.txt"
    body.write_text("hello")
    tests = str(Path(__file__).parent)
    several = _perf("perf_service:svc", "--working-dir", tests, "--input", str(body))
    assert several.returncode == 1 and "say which to measure with --api" in several.stderr
    unknown = _perf("perf_service:svc", "--api", "nope", "--working-dir", tests, "--input", str(body))
    assert unknown.returncode == 1 and "no API 'nope'" in unknown.stderr and "'shout'" in unknown.stderr
    report = tmp_path / "out.json"
    out = _perf("perf_service:svc", "--api", "shout", "--working-dir", tests, "--input", str(body),
                "--concurrency", "2", "--window", "0.5", "--max-trials", "3", "--json", str(report),
                timeout=280)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    document = json.loads(report.read_text())
    url = document["target"]["url"]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/loud")  # the API's own route
    (level,) = document["levels"]
    assert level["throughput"] > 0 and level["errors"] == 0
    port = int(url.split(":")[2].split("/")[0])
    with socket.socket() as probe:  # the service it started is gone
        assert probe.connect_ex(("127.0.0.1", port)) != 0


def test_levels_that_fail_or_shed_are_no_candidates_and_say_so():
    from raystore._private.perf.report import verdict

    def level(load, throughput, p99, errors=0, overloaded=0):
        return Level(load, 3, True, throughput, 1, 1, 1, p99, 1, int(throughput * 3), errors, overloaded, 0.1)

    shedding = [level(4, 400, 10), level(16, 500, 12, overloaded=4500)]  # fast 503s keep p99 low
    assert best_within(shedding, 50).load == 4 and knee(shedding).load == 4  # the knee is no shedding level either
    assert any("no candidate" in line for line in verdict(shedding, 50))
    failing = [level(1, 0, math.nan, errors=5000), level(4, 0, math.nan, errors=9000)]
    assert knee(failing) is None and best_within(failing, 50) is None
    assert any("no request succeeded" in line for line in verdict(failing, None))
    with pytest.raises(InvalidArgument, match="at most 64"):
        parse_levels("1:10000000000:+1")  # refused at once, not built first
    with pytest.raises(InvalidArgument):
        parse_levels("1:256:x2:9")


def test_a_service_s_counters_are_subtracted_replica_by_replica():
    from raystore._private.perf.service_stats import difference

    def stats(requests, batches, sizes, p99=0.002):
        return {"requests": requests, "batches": batches, "batch_sizes": sizes, "rejected": 0, "expired": 0,
                "queue_wait_s": {"p99": p99}, "execution_s": {"p50": 0.001}, "from": "one runner replica"}  # fmt: skip

    before = {"m.predict": {"a": stats(100, 20, {"5": 20}), "b": stats(1000, 100, {"10": 100})}}
    after = {"m.predict": {"a": stats(160, 30, {"5": 20, "6": 10}), "b": stats(1040, 104, {"10": 104}, p99=0.009)}}
    both = difference(before, after)["m.predict"]
    assert both["requests"] == 60 + 40 and both["batches"] == 14 and both["replicas"] == 2
    assert both["mean_batch_size"] == (60 + 40) / 14 and both["queue_wait_p99_ms"] == 9.0
    assert both["from"] == "2 replicas"
    # a replica seen only after (its totals include what it did before), or restarted: left out
    only_a = difference({"m.predict": {"a": before["m.predict"]["a"]}}, after)["m.predict"]
    assert only_a["requests"] == 60 and only_a["mean_batch_size"] == 6.0 and only_a["from"] == "one runner replica"
    restarted = {"m.predict": {"a": stats(3, 1, {"3": 1})}}
    assert difference(before, restarted) == {}


def test_redirects_bodiless_answers_and_bad_arrays(tmp_path):
    import numpy as np
    from starlette.applications import Starlette
    from starlette.responses import RedirectResponse, Response
    from starlette.routing import Route

    async def moved(request):
        return RedirectResponse("/elsewhere", status_code=302)

    async def nothing(request):
        await request.body()
        return Response(status_code=204)  # neither a length nor chunks

    body = tmp_path / "x.txt"
    body.write_text("x")
    app = Starlette(routes=[Route("/moved", moved, methods=["POST"]), Route("/nothing", nothing, methods=["POST"])])
    with served(app) as url:
        redirected = _perf(f"{url}/moved", "--input", str(body))
        assert redirected.returncode == 1 and "a redirect to '/elsewhere'" in redirected.stderr
        report = tmp_path / "n.json"
        out = _perf(f"{url}/nothing", "--input", str(body), "--concurrency", "2", "--window", "0.5",
                    "--max-trials", "3", "--json", str(report))  # fmt: skip
        assert out.returncode == 0, out.stderr
        (level,) = json.loads(report.read_text())["levels"]
        assert level["throughput"] > 100 and level["errors"] == 0 and level["p99_ms"] < 1000
    for name, array in (("complex.npy", np.array([1j])), ("nan.npy", np.array([np.nan]))):
        np.save(tmp_path / name, array)
        bad = _perf("http://127.0.0.1:1/x", "--input", str(tmp_path / name))
        assert bad.returncode == 1 and "cannot send it as a JSON array" in bad.stderr, bad.stderr


# ---- V2 models ----------------------------------------------------------------------------------


def test_v2_bodies_are_made_from_arrays_as_the_model_declares_them(tmp_path):
    import numpy as np

    from raystore._private.perf.v2 import v2_bodies
    from raystore._private.service.v2.codec import HEADER_LENGTH, decode_request

    metadata = {"inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}]}
    array = np.array([[5.9, 3.0, 5.1, 1.8]])  # float64, as numpy makes it
    np.save(tmp_path / "x.npy", array)
    (as_json,) = v2_bodies(str(tmp_path / "x.npy"), None, metadata)
    assert as_json.content_type == "application/json" and as_json.headers == ()
    document = json.loads(as_json.data)
    assert document["inputs"][0] == {"name": "features", "datatype": "FP32", "shape": [1, 4],
                                     "data": [5.900000095367432, 3.0, 5.099999904632568, 1.7999999523162842]}  # fmt: skip
    (binary,) = v2_bodies(str(tmp_path / "x.npy"), None, metadata, binary=True)
    headers = dict(binary.headers)
    assert binary.content_type == "application/octet-stream" and int(headers[HEADER_LENGTH]) < len(binary.data)
    (tensor,) = decode_request(binary.data, headers[HEADER_LENGTH]).inputs
    assert tensor.name == "features" and tensor.array.dtype == np.float32
    assert np.array_equal(tensor.array, array.astype(np.float32))
    # a request file is sent as it is
    request = tmp_path / "request.json"
    request.write_text(
        json.dumps({"inputs": [{"name": "features", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]})
    )
    (given,) = v2_bodies(str(request), None, metadata)
    assert given.data == request.read_bytes()
    # arrays by input name for a model of several inputs
    two = {
        "inputs": [{"name": "a", "datatype": "INT64", "shape": [-1]}, {"name": "b", "datatype": "FP64", "shape": [-1]}]
    }
    np.savez(tmp_path / "ab.npz", a=np.array([1, 2]), b=np.array([0.5, 1.5]))
    (pair,) = v2_bodies(str(tmp_path / "ab.npz"), None, two)
    assert [t["name"] for t in json.loads(pair.data)["inputs"]] == ["a", "b"]
    with pytest.raises(InvalidArgument, match=r"the model has inputs \['a', 'b'\]; give a .npz"):
        v2_bodies(str(tmp_path / "x.npy"), None, two)
    np.savez(tmp_path / "wrong.npz", a=np.array([1]), c=np.array([2.0]))
    with pytest.raises(InvalidArgument, match=r"holds arrays \['a', 'c'\]; the model's inputs are \['a', 'b'\]"):
        v2_bodies(str(tmp_path / "wrong.npz"), None, two)
    np.save(tmp_path / "floats.npy", np.array([0.5]))
    with pytest.raises(InvalidArgument, match="input 'a' is float64; the model takes INT64"):
        v2_bodies(str(tmp_path / "floats.npy"), None, {"inputs": [two["inputs"][0]]})
    (tmp_path / "rows.csv").write_text("1,2,3,4\n")
    with pytest.raises(InvalidArgument, match=r"a V2 input is an infer request \(.json\)"):
        v2_bodies(str(tmp_path / "rows.csv"), None, metadata)
    (tmp_path / "plain.json").write_text("[[1, 2, 3, 4]]")
    with pytest.raises(InvalidArgument, match='a V2 infer request is a JSON object with "inputs"'):
        v2_bodies(str(tmp_path / "plain.json"), None, metadata)
    with pytest.raises(InvalidArgument, match="--binary makes requests from arrays"):
        v2_bodies(str(request), None, metadata, binary=True)


def test_a_v2_model_is_measured_with_json_and_binary_tensors(iris_clf, tmp_path):
    import numpy as np

    np.save(tmp_path / "x.npy", np.array([[5.9, 3.0, 5.1, 1.8]]))
    app, runner = _iris_app(iris_clf, v2=True)
    try:
        with served(app) as url:
            for extra in ([], ["--binary"]):
                report = tmp_path / "v2.json"
                out = _perf("--v2", url, "--model", "iris_clf", "--input", str(tmp_path / "x.npy"),
                            "--concurrency", "2", "--window", "0.3", "--max-trials", "3", "--json", str(report),
                            *extra)  # fmt: skip
                assert out.returncode == 0, out.stderr
                document = json.loads(report.read_text())
                assert document["target"]["url"] == f"{url}/v2/models/iris_clf/infer"
                (level,) = document["levels"]
                assert level["throughput"] > 0 and level["errors"] == 0 and level["overloaded"] == 0
                assert level["batching"]["iris_clf.predict"]["requests"] >= level["requests"]
            unknown = _perf("--v2", f"{url}/v2/", "--model", "nope", "--input", str(tmp_path / "x.npy"))
            assert unknown.returncode == 1 and "answered 404" in unknown.stderr and "no model 'nope'" in unknown.stderr
            np.save(tmp_path / "short.npy", np.array([[1.0, 2.0]]))
            refused = _perf("--v2", url, "--model", "iris_clf", "--input", str(tmp_path / "short.npy"))
            assert refused.returncode == 1 and "X has 2 features" in refused.stderr  # the model's own word
    finally:
        runner.destroy_local()


def test_target_options_that_do_not_go_together_are_clear_errors(tmp_path):
    body = tmp_path / "x.json"
    body.write_text("[1]")
    cases = [
        (["--input", str(body)], "give a target"),
        (["http://127.0.0.1:1/x", "--v2", "http://127.0.0.1:1", "--input", str(body)], "not both"),
        (["--v2", "http://127.0.0.1:1", "--input", str(body)], "--v2 needs --model NAME"),
        (["http://127.0.0.1:1/x", "--model", "m", "--input", str(body)], "give its server with --v2 URL"),
        (["http://127.0.0.1:1/x", "--binary", "--input", str(body)], "--binary sends V2 tensors"),
        (["http://127.0.0.1:1/x", "--api", "a", "--input", str(body)], "--api goes with a MODULE:svc target"),
        (["http://127.0.0.1:1/x", "--tune", "--input", str(body)], "--tune needs a MODULE:svc target"),
        (
            ["m:svc", "--tune", "--tune-batch-sizes", "8,x", "--input", str(body)],
            "--tune-batch-sizes takes whole numbers",
        ),
        (
            ["m:svc", "--tune", "--tune-latencies-ms", "0", "--input", str(body)],
            "--tune-latencies-ms takes numbers > 0",
        ),
        (["m:svc", "--tune-runner", "r", "--input", str(body)], "--tune-runner goes with --tune"),
        (
            ["m:svc", "--tune-replicas", "2", "--tune-batch-sizes", "4", "--input", str(body)],
            "--tune-batch-sizes, --tune-replicas go with --tune",
        ),
        (
            ["--v2", "http://127.0.0.1:1", "--model", "m", "--content-type", "text/csv", "--input", str(body)],
            "--content-type does not go with --model",
        ),
        (
            ["http://127.0.0.1:1/x", "--working-dir", "tests", "--input", str(body)],
            "--working-dir goes with a MODULE:svc",
        ),
        (["--v2", "http://127.0.0.1:1", "--model", "m", "--input", str(tmp_path / "nope.npy")], "no such file"),
    ]
    for args, message in cases:
        out = _perf(*args)
        assert out.returncode == 1 and message in out.stderr, (args, out.stderr)


# ---- --tune -------------------------------------------------------------------------------------


def _tune_service():
    tests = str(Path(__file__).parent)
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import tune_service

    return tune_service


def test_a_tuned_config_sets_each_runner_where_it_runs():
    from raystore._private.deploy.build import build_config
    from raystore._private.deploy.tunable import RunnerSetting, tuned_config

    service = _tune_service().svc
    config = build_config("tune_service:svc", working_dir=str(Path(__file__).parent))
    tuned = tuned_config(config, service, {"inline": RunnerSetting(8, 5.0), "apart": RunnerSetting(100, 20, 3)})
    deployments = {d["name"]: d for d in tuned["applications"][0]["deployments"]}
    ingress, apart = deployments["tune_target-ingress"], deployments["apart"]
    assert ingress["user_config"] == {"runners": {"inline": {"double": {"max_batch_size": 8, "max_latency_ms": 5.0}}}}
    assert "num_replicas" not in ingress  # embedded: the ingress's replicas are not the runner's
    assert apart["user_config"] == {"double": {"max_batch_size": 100, "max_latency_ms": 20}}  # `pid` does not batch
    assert apart["num_replicas"] == 3 and apart["max_ongoing_requests"] == 200  # room for two full batches
    untouched = {d["name"]: d for d in config["applications"][0]["deployments"]}
    assert "user_config" not in untouched["apart"] and untouched["apart"]["num_replicas"] == 1  # a copy was changed
    # a setting left None is written out as coded: going back to it reaches the replicas too
    coded = tuned_config(config, service, {"apart": RunnerSetting(replicas=3)})
    (apart_coded,) = [d for d in coded["applications"][0]["deployments"] if d["name"] == "apart"]
    assert apart_coded["user_config"] == {"double": {"max_batch_size": 4, "max_latency_ms": 100.0}}
    with pytest.raises(InvalidArgument, match="'inline' is embedded in the ingress replica"):
        tuned_config(config, service, {"inline": RunnerSetting(replicas=2)})
    with pytest.raises(InvalidArgument, match=r"no runner 'nope'; it has \['apart', 'inline'\]"):
        tuned_config(config, service, {"nope": RunnerSetting(8)})
    with pytest.raises(InvalidArgument, match="max_batch_size must be an integer >= 1"):
        RunnerSetting(0)


def test_the_grid_and_the_recommendation():
    from raystore._private.perf.tune import GridPoint, Trial, plan_grid, recommend

    service = _tune_service().svc
    plan = plan_grid(service, None, [8, 32], [5.0], [1, 2])
    assert [(p.max_batch_size, p.replicas) for p in plan.points] == [(8, 1), (8, 2), (32, 1), (32, 2)]
    assert plan.replicated == {"apart"} and "'inline' is embedded" in plan.notes[0]
    settings = plan.settings(plan.points[1])
    assert settings["inline"].replicas is None and settings["apart"].replicas == 2
    assert plan.code(plan.points[1]) == {
        "inline": "max_batch_size=8, max_latency_ms=5",  # embedded: no replicas of its own
        "apart": "max_batch_size=8, max_latency_ms=5, num_replicas=2",
    }
    only_inline = plan_grid(service, "inline", [8], [5.0], [1, 2])
    assert [p.replicas for p in only_inline.points] == [None]  # no replicas of its own: the axis goes
    with pytest.raises(InvalidArgument, match=r"--tune-runner 'x': service 'tune_target' has runners"):
        plan_grid(service, "x", [8], [5.0], [1])

    def trial(size, replicas, throughput, p99):
        level = Level.of(16, [Window(1.0, [p99] * int(throughput))], True)
        return Trial(GridPoint(size, 5.0, replicas), [level], 0.5, level)

    fast_two, near_one, near_one_slower, slow = (
        trial(8, 2, 1000, 9),
        trial(32, 1, 960, 12),
        trial(8, 1, 955, 20),
        trial(128, 1, 500, 5),
    )
    assert recommend([fast_two, near_one, near_one_slower, slow]) is near_one  # within 5%: fewer replicas, then p99
    assert recommend([fast_two, trial(32, 1, 900, 5)]) is fast_two  # 10% slower is not as fast
    assert recommend([Trial(GridPoint(8, 5.0, 1), [], 0.5, None)]) is None
    # a setting with no level within the budget shows its fastest level, and why it does not count
    from rich.console import Console

    from raystore._private.perf.report import tune_table

    over = trial(8, 1, 700, 80)
    over.chosen = None
    refused = Trial(GridPoint(64, 5.0, 1), [], 0.0, None, error="no room for 64")
    console = Console(record=True, width=200)
    console.print(tune_table([near_one, over, refused], near_one, "t"))
    lines = console.export_text().splitlines()
    assert any("max_batch_size=32" in line and "recommended" in line for line in lines)
    assert any("700.0" in line and "80.0" in line and "p99 over budget" in line for line in lines)
    assert any("max_batch_size=64" in line and "refused by the service" in line for line in lines)


def test_a_refused_setting_is_reported_and_an_interrupted_grid_keeps_what_it_measured():
    from raystore._private.perf.tune import plan_grid, tune

    plan = plan_grid(_tune_service().svc, "apart", [8, 64, 128], [5.0], [1])
    measured = []

    def apply(settings):
        if settings["apart"].max_batch_size == 64:
            raise InvalidArgument("no room for 64")
        return 0.25

    def measure():
        if len(measured) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the third sweep
        measured.append(1)
        return [Level.of(4, [Window(1.0, [3.0] * 100)], True)]

    trials, interrupted = tune(plan, apply, measure, None)
    assert [t.point.max_batch_size for t in trials] == [8, 64, 128] and not interrupted
    assert trials[1].error == "no room for 64" and trials[1].levels == [] and trials[0].chosen.throughput == 100
    measured.clear()
    trials, interrupted = tune(plan_grid(_tune_service().svc, "apart", [8, 16, 32], [5.0], [1]), apply, measure, None)
    assert interrupted and [t.point.max_batch_size for t in trials] == [8, 16]


@pytest.mark.ray
def test_a_tunable_service_changes_settings_in_place(tmp_path):
    """Batch settings reach the running replicas (the ingress's for an embedded runner) and a
    replica count adds a replica; the replicas that were there stay, models loaded."""
    import urllib.request

    from raystore._private.deploy.tunable import RunnerSetting
    from raystore._private.perf.target import tunable_service

    def get(url, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def settings_now(base):
        document = get(f"{base}/ui/service.json")
        return {(r["name"], m["name"]): (m["max_batch_size"], m["max_latency_ms"], (m["stats"] or {}).get("requests"))
                for r in document["runners"] for m in r["methods"] if m["batchable"]}  # fmt: skip

    tests = str(Path(__file__).parent)
    with tunable_service("tune_service:svc", "/pids", tests) as service:
        base = service.url.removesuffix("/pids")
        first = get(service.url, {})
        assert get(f"{base}/double", 21) == {"inline": 42, "apart": 42}
        assert settings_now(base)[("inline", "double")] == (4, 100, 1)
        service.apply({"inline": RunnerSetting(16, 7.5), "apart": RunnerSetting(32, 9, 2)})
        now = settings_now(base)
        assert now[("inline", "double")] == (16, 7.5, 1)  # the request before still counted: not restarted
        assert now[("apart", "double")][:2] == (32, 9)
        ingress, apart = set(), set()
        deadline = time.monotonic() + 60  # the ingress's router hears of the new replica soon, not at once
        while len(apart) < 2 and time.monotonic() < deadline:
            seen = get(service.url, {})
            ingress.add(seen["ingress"])
            apart.add(seen["apart"])
        assert ingress == {first["ingress"]}
        assert len(apart) == 2 and first["apart"] in apart  # one more replica; the first one stayed
        with pytest.raises(InvalidArgument, match="embedded in the ingress replica"):
            service.apply({"inline": RunnerSetting(replicas=2)})
        assert get(f"{base}/double", 1) == {"inline": 2, "apart": 2}  # a refused setting changes nothing
    port = int(base.rsplit(":", 1)[1])
    import socket

    with socket.socket() as probe:  # the host is gone with its Ray
        assert probe.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.ray
def test_tune_sweeps_each_setting_and_recommends_one(tmp_path):
    body = tmp_path / "x.json"
    body.write_text("3")
    tests = str(Path(__file__).parent)
    nothing = _perf("perf_service:svc", "--api", "shout", "--working-dir", tests, "--tune", "--input", str(body))
    assert nothing.returncode == 1 and "has no runners: nothing to tune" in nothing.stderr
    out = _perf("tune_service:svc", "--api", "double", "--working-dir", tests, "--input", str(body), "--tune",
                "--tune-runner", "apart", "--tune-batch-sizes", "1,8", "--tune-latencies-ms", "50",
                "--tune-replicas", "1", "--concurrency", "8", "--window", "0.4", "--max-trials", "4",
                "--latency-budget-ms", "10000", "--csv", str(tmp_path / "t.csv"), "--json", str(tmp_path / "t.json"),
                "--plot", str(tmp_path / "t.png"), timeout=280)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    document = json.loads((tmp_path / "t.json").read_text())
    settings = document["settings"]
    assert [s["setting"] for s in settings] == [
        {"max_batch_size": 1, "max_latency_ms": 50.0, "replicas": 1},
        {"max_batch_size": 8, "max_latency_ms": 50.0, "replicas": 1},
    ]
    for setting in settings:
        (level,) = setting["levels"]
        assert level["throughput"] > 0 and level["errors"] == 0 and setting["chosen"] == 8
        batching = level["batching"]["apart.double"]
        assert batching["mean_batch_size"] <= setting["setting"]["max_batch_size"]  # the setting held
    assert settings[0]["levels"][0]["batching"]["apart.double"]["mean_batch_size"] == 1
    assert document["recommended"] in [s["setting"] for s in settings]
    assert document["runners"] == ["apart"] and document["replicas_of"] == ["apart"]
    assert document["recommended_code"]["apart"].endswith("num_replicas=1")
    rows = list(csv.DictReader((tmp_path / "t.csv").open()))
    assert [r["max_batch_size"] for r in rows] == ["1", "8"] and all(r["replicas"] == "1" for r in rows)
    assert all(r["chosen"] == "True" for r in rows) and [r["recommended"] for r in rows].count("True") == 1
    assert "Recommended: max_batch_size=" in out.stdout and "In code, for runner 'apart': .to_runner(" in out.stdout
    assert (tmp_path / "t.png").read_bytes().startswith(b"\x89PNG")
