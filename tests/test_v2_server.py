"""`raystore serve --model` over the Open Inference Protocol, as Triton's own HTTP client
(`tritonclient.http`) calls it: health and metadata, inference with JSON and binary tensors, a
chosen version, a second signature, and the errors a client must be able to read."""

import json
import os
import re
import sys
import time
import urllib.request

import numpy as np
import pytest
from serving import free_port, raystore_serve

import raystore

pytestmark = pytest.mark.ray
triton = pytest.importorskip("tritonclient.http")
from tritonclient.utils import InferenceServerException  # noqa: E402


class SlowDouble:
    """Takes 20 ms a call, batch or not: concurrent requests queue up behind a running batch."""

    def __call__(self, x):
        time.sleep(0.02)
        return x * 2


class Answer:
    """Answers every row with its own number: versions are told apart by value."""

    def __init__(self, k):
        self.k = k

    def __call__(self, x):
        return np.zeros((len(x), 1), dtype=np.float32) + self.k


def save_answer(k):
    return raystore.picklable_model.save_model(
        "answer", Answer(k), signatures={"__call__": {"batchable": True}}, external_modules=[sys.modules[__name__]]
    )


class FailsToLoad:
    """Saves fine; raises when a replica unpickles it, as a model needing what a node lacks does."""

    def __init__(self):
        self.weights = [1.0]  # some state, or unpickling would not call __setstate__

    def __call__(self, x):
        return x

    def __setstate__(self, state):
        raise RuntimeError("cannot load here: no such device")


@pytest.fixture(scope="module")
def v2_server(tmp_path_factory, iris):
    """A store with an iris classifier (scikit-learn, two versions) and an iris ONNX graph, served
    by `raystore serve --model` in a process of its own."""
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    home = tmp_path_factory.mktemp("v2-store")
    x, y = iris
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYSTORE_HOME", str(home))
        signatures = {"predict": {"batchable": True}, "predict_proba": {"batchable": True}}
        old = raystore.sklearn.save_model("iris_clf", LogisticRegression(max_iter=5).fit(x, y), signatures=signatures)
        classifier = LogisticRegression(max_iter=500).fit(x, y)
        new = raystore.sklearn.save_model("iris_clf", classifier, signatures=signatures)
        x32 = x.astype(np.float32)
        graph = to_onnx(LogisticRegression(max_iter=500).fit(x32, y), x32[:1], options={"zipmap": False})
        onnx_model = raystore.onnx.save_model("iris_onnx", graph)
        raystore.picklable_model.save_model(
            "slow_double",
            SlowDouble(),
            signatures={"__call__": {"batchable": True}},
            external_modules=[sys.modules[__name__]],
        )
        tree = DecisionTreeClassifier(max_depth=2).fit(x, y)  # in the store, not served until loaded
        raystore.sklearn.save_model("iris_tree", tree, signatures={"predict": {"batchable": True}})
        answers = [save_answer(k).tag for k in range(3)]  # served as a bare name: every version
        raystore.models.set_alias(answers[0], "prod")
        raystore.picklable_model.save_model(
            "fails_to_load",
            FailsToLoad(),
            signatures={"__call__": {"batchable": True}},
            external_modules=[sys.modules[__name__]],
        )
    env = {**os.environ, "RAYSTORE_HOME": str(home), "RAY_metrics_report_interval_ms": "500"}
    models = (
        f"--model={old.tag}",
        f"--model={new.tag}",
        "--model=iris_onnx:latest",
        "--model=slow_double:latest",
        "--model=answer",
        "--max-models-per-replica=2",
    )
    metrics_port = free_port()
    with raystore_serve(env, models[0], home, *models[1:], "--no-access-log", metrics_port=metrics_port) as (_, port):
        client = triton.InferenceServerClient(url=f"127.0.0.1:{port}", concurrency=16)
        client.base_url = f"http://127.0.0.1:{port}"
        client.metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        client.store_home, client.answers = home, answers
        yield client, old, new, onnx_model, graph, classifier, tree


def _input(name, array, datatype, binary):
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array, binary_data=binary)
    return tensor


def test_health_and_metadata(v2_server):
    client, old, new, onnx_model, *_ = v2_server
    assert client.is_server_live() and client.is_server_ready()
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    assert client.is_model_ready("iris_clf") and client.is_model_ready("iris_onnx")
    meta = client.get_model_metadata("iris_clf")
    assert meta["versions"] == [new.tag.version]  # no version: the newest served
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP64", "shape": [-1, 4]}]
    # the shortest prefix of the older version that is not the newer one's (both saved in one moment)
    prefix = next(old.tag.version[:i] for i in range(1, 17) if not new.tag.version.startswith(old.tag.version[:i]))
    assert client.get_model_metadata("iris_clf", model_version=prefix)["versions"] == [old.tag.version]
    shared = old.tag.version[: len(prefix) - 1]
    with pytest.raises(InferenceServerException, match="give more characters"):
        client.get_model_metadata("iris_clf", model_version=shared)
    assert client.get_model_metadata("iris_clf.predict_proba")["name"] == "iris_clf.predict_proba"
    onnx_meta = client.get_model_metadata("iris_onnx")
    assert onnx_meta["inputs"] == [{"name": "X", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in onnx_meta["outputs"]] == ["label", "probabilities"]
    assert onnx_meta["platform"] == "raystore_onnx" and onnx_meta["versions"] == [onnx_model.tag.version]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_infer_with_json_and_binary_tensors(v2_server, iris, binary):
    client, old, new, _, graph, iris_clf, _ = v2_server
    x, _ = iris
    rows = x[[0, 60, 120]]
    outputs = [triton.InferRequestedOutput("output__0", binary_data=binary)]
    result = client.infer("iris_clf", [_input("input__0", rows, "FP64", binary)], outputs=outputs, request_id="r-1")
    np.testing.assert_array_equal(result.as_numpy("output__0"), iris_clf.predict(rows))
    response = result.get_response()
    assert response["model_version"] == new.tag.version and response["id"] == "r-1"

    # the second signature, by name and by parameter
    proba = client.infer("iris_clf.predict_proba", [_input("input__0", rows, "FP64", binary)])
    np.testing.assert_allclose(proba.as_numpy("output__0"), iris_clf.predict_proba(rows))
    by_parameter = client.infer(
        "iris_clf", [_input("input__0", rows, "FP64", binary)], parameters={"signature": "predict_proba"}
    )
    np.testing.assert_allclose(by_parameter.as_numpy("output__0"), iris_clf.predict_proba(rows))

    # a chosen version: the older, barely trained classifier
    older = client.infer("iris_clf", [_input("input__0", rows, "FP64", binary)], model_version=old.tag.version)
    assert older.get_response()["model_version"] == old.tag.version

    # an ONNX graph: inputs by name, two outputs, one asked for
    onnx_rows = rows.astype(np.float32)
    asked = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("iris_onnx", [_input("X", onnx_rows, "FP32", binary)], outputs=asked)
    import onnxruntime

    want = onnxruntime.InferenceSession(graph.SerializeToString()).run(None, {"X": onnx_rows})[1]
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, rtol=1e-5)
    assert result.as_numpy("label") is None


def test_errors_reach_the_client_with_the_servers_message(v2_server, iris):
    client, *_ = v2_server
    x, _ = iris
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris_onnx", [_input("X", x[:2, :3].astype(np.float32), "FP32", False)])
    assert "takes shape [-1, 4] (-1: any), got [2, 3]" in str(err.value) and err.value.status() == "400"
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris_onnx", [_input("Y", x[:2].astype(np.float32), "FP32", False)])
    assert "the model's inputs are ['X']; got unknown ['Y'] and missing ['X']" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.infer(
            "iris_onnx",
            [_input("X", x[:2].astype(np.float32), "FP32", True)],
            outputs=[triton.InferRequestedOutput("nope")],
        )
    assert "no outputs ['nope']" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.infer("no_such_model", [_input("X", x[:2], "FP64", False)])
    assert err.value.status() == "404" and "no model 'no_such_model' here" in str(err.value)
    with pytest.raises(InferenceServerException) as err:
        client.get_model_metadata("iris_clf", model_version="zzzz")
    assert "has no version 'zzzz'" in str(err.value)
    assert client.is_server_live()  # and the server keeps serving


def test_concurrent_one_row_requests_share_batches(v2_server):
    client, *_ = v2_server
    rows = np.arange(64 * 4, dtype=np.float32).reshape(64, 1, 4)
    pending = [client.async_infer("slow_double", [_input("input__0", row, "FP32", True)]) for row in rows]
    for row, result in zip(rows, pending, strict=True):
        np.testing.assert_array_equal(result.get_result().as_numpy("output__0"), row * 2)  # each its own rows
    pattern = r'ray_raystore_batch%s_total\{[^}]*deployment="slow_double"[^}]*\} (\d+(?:\.\d+)?)'
    deadline, requests, batches = time.time() + 60, 0.0, 0.0
    while time.time() < deadline:
        text = urllib.request.urlopen(client.metrics_url, timeout=5).read().decode()
        found = re.search(pattern % "_requests", text), re.search(pattern % "es", text)
        if all(found):
            requests, batches = float(found[0].group(1)), float(found[1].group(1))
            if requests >= 64:
                break
        time.sleep(1)
    assert requests == 64 and 0 < batches < requests / 2, (requests, batches)  # rows of many requests a batch


def test_models_load_and_unload_through_the_repository_api(v2_server, iris):
    client, old, new, *_, tree = v2_server
    x, _ = iris
    assert "model_repository" in client.get_server_metadata()["extensions"]

    def states():
        return {
            (e["name"], e["version"]): (e["state"], e.get("reason", "")) for e in client.get_model_repository_index()
        }

    index = states()
    assert index[("iris_clf", old.tag.version)] == ("READY", "") and index[("iris_clf", new.tag.version)] == (
        "READY",
        "",
    )
    (tree_version,) = [version for name, version in index if name == "iris_tree"]
    assert index[("iris_tree", tree_version)] == ("UNAVAILABLE", "not loaded")
    assert not client.is_model_ready("iris_tree")

    client.load_model("iris_tree")  # answers once the model's replica runs
    assert client.is_model_ready("iris_tree")
    assert states()[("iris_tree", tree_version)] == ("READY", "")
    assert client.get_model_metadata("iris_tree")["versions"] == [tree_version]
    rows = x[::10]
    result = client.infer("iris_tree", [_input("input__0", rows, "FP64", True)])
    np.testing.assert_array_equal(result.as_numpy("output__0"), tree.predict(rows))
    client.load_model("iris_tree")  # loaded already: nothing to do
    ready = urllib.request.Request(f"{client.base_url}/v2/repository/index", data=b'{"ready": true}', method="POST")
    ready_index = json.loads(urllib.request.urlopen(ready, timeout=10).read())
    assert {e["state"] for e in ready_index} == {"READY"} and {e["name"] for e in ready_index} >= {
        "iris_clf",
        "iris_tree",
    }

    client.unload_model("iris_tree")
    with pytest.raises(InferenceServerException) as err:
        client.infer("iris_tree", [_input("input__0", rows, "FP64", True)])
    assert err.value.status() == "404"
    assert states()[("iris_tree", tree_version)][0] in ("UNLOADING", "UNAVAILABLE")

    # The models the server started with: loading one does nothing (no second copy), unloading
    # one is refused, unloading by their name unloads nothing; unknown models: 404 to load, and
    # nothing to unload, as Triton answers.
    client.load_model(f"iris_clf:{old.tag.version}")
    assert client.get_model_metadata("iris_clf", model_version=old.tag.version)["versions"] == [old.tag.version]
    with pytest.raises(InferenceServerException, match="served by the server's own application"):
        client.unload_model(f"iris_clf:{new.tag.version}")
    client.unload_model("iris_clf")
    with pytest.raises(InferenceServerException) as err:
        client.load_model("no_such_model")
    assert err.value.status() == "404"
    client.unload_model("no_such_model")
    assert client.infer("iris_clf", [_input("input__0", rows, "FP64", True)]).as_numpy("output__0").shape == (15,)
    assert client.is_model_ready("iris_clf", model_version=old.tag.version)

    # a model whose replica cannot load it: the error, and nothing left running
    with pytest.raises(InferenceServerException) as err:
        client.load_model("fails_to_load")
    assert err.value.status() == "500" and "failed to load" in str(err.value) and "no such device" in str(err.value)
    (state,) = [e["state"] for e in client.get_model_repository_index() if e["name"] == "fails_to_load"]
    assert state in ("UNLOADING", "UNAVAILABLE")
    assert not client.is_model_ready("fails_to_load")


def test_a_bare_name_serves_every_version_latest_per_request(v2_server):
    client, *_ = v2_server
    answers = client.answers
    one_row = np.zeros((1, 1), dtype=np.float32)

    def answer(version=""):
        result = client.infer("answer", [_input("input__0", one_row, "FP32", True)], model_version=version)
        return result.as_numpy("output__0").item(), result.get_response()["model_version"]

    assert answer() == (2, answers[2].version)  # latest
    assert answer(answers[0].version[:12]) == (0, answers[0].version)  # a prefix
    assert answer("prod") == (0, answers[0].version)  # an alias
    assert answer(answers[1].version) == (1, answers[1].version)  # a third version, with 2 held
    meta = client.get_model_metadata("answer")
    assert meta["versions"] == [a.version for a in reversed(answers)]
    assert client.get_model_metadata("answer", model_version="prod")["versions"] == [answers[0].version]
    with pytest.raises(InferenceServerException) as err:
        answer("zzzz")
    assert err.value.status() == "404" and "no version or alias 'zzzz'" in str(err.value)
    assert not client.is_model_ready("answer", model_version="zzzz")

    # a version saved while serving is served without a restart; its model stays on demand, not loadable
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAYSTORE_HOME", str(client.store_home))
        newest = save_answer(3).tag
    deadline = time.time() + 20
    while time.time() < deadline and answer()[0] != 3:
        time.sleep(0.5)  # `latest` is looked up again after 2 s
    assert answer() == (3, newest.version) and answer(newest.version)[0] == 3
    client.load_model("answer")  # served already, every version
    with pytest.raises(InferenceServerException, match="served by the server's own application"):
        client.unload_model(f"answer:{answers[0].version}")
    states = {e["version"]: e["state"] for e in client.get_model_repository_index() if e["name"] == "answer"}
    assert states == {t.version: "READY" for t in [*answers, newest]}
