"""XGBoost, LightGBM and ONNX models, tiny and made here from scikit-learn's bundled data: saved
in their own formats (no pickle), loaded back with identical predictions, batched by runners,
served over HTTP, carried by export/import and push/pull, and bad input refused clearly."""

import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris

import raystore
from raystore.exceptions import BadInput, InvalidArgument, MissingDependency, StoreError

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def iris_xy():
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def _xgb_classifier(x, y):
    return xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(x, y)


def _xgb_booster(x, y):
    return xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, label=y), num_boost_round=8)


def _lgb_classifier(x, y):
    names = np.array(["setosa", "versicolor", "virginica"])[y]  # string classes come back as strings
    return lgb.LGBMClassifier(n_estimators=8, num_leaves=7, verbose=-1).fit(x, names)


def _lgb_booster(x, y):
    return lgb.train({"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(x, label=y), 8)


def _onnx_graph(x, y):
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    return to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1], options={"zipmap": False})


def _direct(kind, model, x):
    """What the model itself answers, called in-process without raystore."""
    if kind == "xgb_booster":
        return model.predict(xgb.DMatrix(x))
    if kind == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return dict(zip(["label", "probabilities"], session.run(None, {"X": x}), strict=True))
    return model.predict(x)


KINDS = {
    "xgb_classifier": (raystore.xgboost, _xgb_classifier, "predict"),
    "xgb_booster": (raystore.xgboost, _xgb_booster, "predict"),
    "lgb_classifier": (raystore.lightgbm, _lgb_classifier, "predict"),
    "lgb_booster": (raystore.lightgbm, _lgb_booster, "predict"),
    "onnx": (raystore.onnx, _onnx_graph, "run"),
}


def _same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            _same(a[key], b[key])
    elif np.asarray(a).dtype.kind in "fc":
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_save_load_and_a_local_runner_give_the_models_own_answers(kind, iris_xy):
    module, make, method = KINDS[kind]
    x, y = iris_xy
    model = make(x, y)
    saved = module.save_model(kind, model, labels={"kind": kind})
    assert saved.info.signatures[method].batchable
    assert saved.info.context["framework_name"] == module.__name__.split(".")[-1]
    files = {entry.path for entry in saved.manifest}
    assert not any(path.endswith(".pkl") and path != "custom_objects.pkl" for path in files)  # no pickled model
    loaded = module.load_model(kind)
    if kind != "onnx":
        _same(_direct(kind, loaded, x), _direct(kind, model, x))
    else:
        _same(dict(zip(["label", "probabilities"], loaded.run(None, {"X": x}), strict=True)), _direct(kind, model, x))

    runner = saved.to_runner()
    runner.init_local()
    rows = [x[i : i + 1 + i % 3] for i in range(0, 60, 4)]  # callers of 1-3 rows each

    async def callers():
        return await asyncio.gather(*(getattr(runner, method).async_run(r) for r in rows))

    answers = asyncio.run(callers())
    for r, answer in zip(rows, answers, strict=True):
        _same(answer, _direct(kind, model, r))
    stats = getattr(runner, method).stats
    assert stats.batches < len(rows)  # concurrent callers shared batches


@pytest.mark.parametrize("kind", ["xgb_classifier", "lgb_booster", "onnx"])
def test_a_wrong_number_of_features_or_a_bad_input_is_a_clear_error(kind, iris_xy):
    module, make, method = KINDS[kind]
    x, y = iris_xy
    runner = module.save_model(kind, make(x, y)).to_runner()
    runner.init_local()
    call = getattr(runner, method).run
    with pytest.raises(
        BadInput, match=r"4 features per row, got rows of 3|takes shape \[-1, 4\] \(-1: any\), got \[2, 3\]"
    ):
        call(x[:2, :3])
    with pytest.raises(BadInput, match=r"2-D array of rows x features, got shape \(4,\)|takes shape \[-1, 4\]"):
        call(x[0])  # one row without its row dimension
    answer = call(x[:2])  # and the runner still serves
    assert len(answer["label"] if kind == "onnx" else answer) == 2


def test_onnx_inputs_by_name_dtype_casts_and_refusals(iris_xy):
    x, y = iris_xy
    runner = raystore.onnx.save_model("graph", _onnx_graph(x, y)).to_runner()
    runner.init_local()
    by_name = runner.run.run({"X": x[:3]})
    assert set(by_name) == {"label", "probabilities"} and by_name["probabilities"].dtype == np.float32
    _same(runner.run(x[:3].astype(np.float64)), by_name)  # float64 fits float32's kind: cast
    with pytest.raises(BadInput, match=r"inputs are \['X'\]; got unknown \['Y'\] and missing \['X'\]"):
        runner.run.run({"Y": x[:3]})
    with pytest.raises(BadInput, match=r"input 'X' takes tensor\(float\) \(float32\), got <U"):
        runner.run.run(x[:3].astype(str))


def test_onnx_from_a_file_with_its_external_data(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "W")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "linear",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["batch", 3])],
        [weights],
    )
    folder = tmp_path / "exported"
    (folder / "weights").mkdir(parents=True)
    onnx.save_model(
        helper.make_model(graph),
        str(folder / "linear.onnx"),
        save_as_external_data=True,
        location="weights/linear.bin",
        size_threshold=0,
    )
    saved = raystore.onnx.save_model("linear", folder / "linear.onnx")
    assert {e.path for e in saved.manifest} >= {"model.onnx", "weights/linear.bin"}
    assert saved.info.options["inputs"] == [{"name": "X", "datatype": "FLOAT", "shape": [-1, 4]}]
    x = np.ones((2, 4), np.float32)
    session = raystore.onnx.load_model("linear")
    np.testing.assert_allclose(session.run(None, {"X": x})[0], x @ np.arange(12, dtype=np.float32).reshape(4, 3))

    hostile = helper.make_model(graph)
    onnx.save_model(
        hostile, str(folder / "hostile.onnx"), save_as_external_data=True, location="w.bin", size_threshold=0
    )
    # the same length, so the protobuf stays valid: the weights now live outside the folder
    text = (folder / "hostile.onnx").read_bytes().replace(b"w.bin", b"../xx")
    (folder / "hostile.onnx").write_bytes(text)
    with pytest.raises(InvalidArgument, match="outside the graph's folder"):
        raystore.onnx.save_model("hostile", folder / "hostile.onnx")
    with pytest.raises(InvalidArgument, match="not an ONNX file"):
        raystore.onnx.save_model("missing", folder / "nope.onnx")


def test_wrappers_of_other_classes_and_unfitted_models_are_refused(iris_xy):
    class MyBooster(xgb.XGBClassifier):
        pass

    x, y = iris_xy
    with pytest.raises(InvalidArgument, match="not one of xgboost's own classes"):
        raystore.xgboost.save_model("mine", MyBooster(n_estimators=2).fit(x, y))
    with pytest.raises(InvalidArgument, match="not fitted yet"):
        raystore.lightgbm.save_model("unfitted", lgb.LGBMRegressor())
    with pytest.raises(InvalidArgument, match="expects xgboost.Booster or a scikit-learn wrapper"):
        raystore.xgboost.save_model("wrong", object())
    assert raystore.models.list() == []


def test_a_missing_framework_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lightgbm", None)  # import lightgbm now raises ImportError
    with pytest.raises(MissingDependency, match=r"pip install 'raystore\[lightgbm\]'"):
        raystore.lightgbm.save_model("gbm", object())


def test_a_model_yaml_naming_a_foreign_class_is_refused(iris_xy, store_home):
    x, y = iris_xy
    saved = raystore.xgboost.save_model("xgbc", _xgb_classifier(x, y))
    info = saved.path_of("model.yaml")
    info.write_text(info.read_text().replace("class: XGBClassifier", "class: DMatrix"))
    with pytest.raises(StoreError, match="'DMatrix' is not an XGBoost wrapper class"):
        raystore.xgboost.load_model("xgbc")


def test_regressors_and_their_signatures(store_home):
    x, y = load_diabetes(return_X_y=True)
    xgb_reg = raystore.xgboost.save_model("xgb_reg", xgb.XGBRegressor(n_estimators=5).fit(x, y))
    lgb_reg = raystore.lightgbm.save_model("lgb_reg", lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(x, y))
    assert set(xgb_reg.info.signatures) == set(lgb_reg.info.signatures) == {"predict"}  # no predict_proba
    np.testing.assert_allclose(raystore.lightgbm.load_model("lgb_reg").predict(x[:5]), lgb_reg_direct(x, y)[:5])


def lgb_reg_direct(x, y):
    return lgb.LGBMRegressor(n_estimators=5, verbose=-1).fit(x, y).predict(x)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_export_import_and_push_pull_carry_each_format(kind, iris_xy, tmp_path, s3_bucket, monkeypatch):
    module, make, _ = KINDS[kind]
    x, y = iris_xy
    model = make(x, y)
    saved = module.save_model(kind, model)
    archive = raystore.models.export_model(saved.tag, str(tmp_path), quiet=True)
    raystore.models.push(saved.tag, remote=s3_bucket, quiet=True)
    raystore.models.delete(saved.tag)
    raystore.models.import_model(archive, quiet=True)
    again = module.load_model(saved.tag)
    raystore.models.delete(saved.tag)
    raystore.models.pull(saved.tag, remote=s3_bucket, quiet=True)
    pulled = module.load_model(saved.tag)
    for loaded in (again, pulled):
        if kind == "onnx":
            _same(loaded.run(None, {"X": x})[0], _direct(kind, model, x)["label"])
        else:
            _same(_direct(kind, loaded, x), _direct(kind, model, x))


def _post(url, rows):
    request = urllib.request.Request(url, data=json.dumps(rows).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.ray
def test_xgboost_and_onnx_runners_served_behind_a_service(serve_http, iris_xy):
    from ray import serve

    from raystore.io import JSON, NumpyNdarray

    x, y = iris_xy
    booster = _xgb_booster(x, y)
    graph = _onnx_graph(x, y)
    trees = raystore.xgboost.save_model("trees", booster).to_runner(resources={"num_cpus": 0.05})
    linear = raystore.onnx.save_model("linear", graph).to_runner(resources={"num_cpus": 0.05})
    svc = raystore.Service("formats", runners=[trees, linear])

    @svc.api(input=NumpyNdarray(dtype="float32"), output=NumpyNdarray())
    async def trees_proba(rows):
        return await trees.predict.async_run(rows)

    @svc.api(input=NumpyNdarray(dtype="float32", shape=(-1, 4)), output=JSON())
    async def linear_label(rows):
        return {"label": (await linear.run.async_run(rows))["label"].tolist()}

    serve.run(svc.to_app(), name="formats", route_prefix="/formats")
    try:
        deadline = time.time() + 90
        while True:
            status, body = _post(f"{serve_http}/formats/trees_proba", x[:3].tolist())
            if status == 200 or time.time() > deadline:
                break
            time.sleep(0.5)
        assert status == 200, body
        np.testing.assert_allclose(body, booster.predict(xgb.DMatrix(x[:3])), rtol=1e-5)
        status, body = _post(f"{serve_http}/formats/linear_label", x[:5].tolist())
        assert status == 200 and body == {"label": _direct("onnx", graph, x[:5])["label"].tolist()}
        # checked by the model's runner, in its own replica: still the client's mistake, a 400
        status, body = _post(f"{serve_http}/formats/trees_proba", x[:2, :3].tolist())
        assert status == 400 and "the model takes 4 features per row, got rows of 3" in body["error"], body
    finally:
        serve.delete("formats")


def test_auto_resources_ask_for_a_gpu_only_where_the_framework_can_use_one(iris_xy):
    import onnxruntime

    x, y = iris_xy
    graph = raystore.onnx.save_model("graph", _onnx_graph(x, y))
    has_cuda = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    # None: one GPU if the cluster has any, settled at deploy time; 0: never
    assert graph.to_runner().spec.methods["run"].resources.num_gpus == (None if has_cuda else 0.0)
    assert graph.to_runner(resources={"num_gpus": 1}).spec.methods["run"].resources.num_gpus == 1.0
    trees = raystore.xgboost.save_model("trees", _xgb_booster(x, y))
    assert trees.to_runner().spec.methods["predict"].resources.num_gpus is None
    gbm = raystore.lightgbm.save_model("gbm", _lgb_booster(x, y))
    assert gbm.to_runner().spec.methods["predict"].resources.num_gpus == 0.0
    with pytest.raises(InvalidArgument, match="runs on CPU only"):
        gbm.to_runner(resources={"num_gpus": 1})


def test_wrapper_params_that_shape_predictions_come_back(store_home):
    x, y = load_diabetes(return_X_y=True)
    x[::7, 0] = -999.0  # this data's own marker for a missing value
    model = xgb.XGBRegressor(missing=-999.0, n_estimators=10, max_depth=3).fit(x, y)
    raystore.xgboost.save_model("with_missing", model)
    loaded = raystore.xgboost.load_model("with_missing")
    assert loaded.missing == -999.0 and loaded.get_params()["max_depth"] == 3
    np.testing.assert_allclose(loaded.predict(x), model.predict(x), rtol=1e-6)


def test_onnx_casts_only_what_keeps_its_values(store_home):
    from onnx import TensorProto, helper

    def identity(elem_type, name):
        graph = helper.make_graph(
            [helper.make_node("Identity", ["X"], ["Y"])],
            name,
            [helper.make_tensor_value_info("X", elem_type, ["n", 3])],
            [helper.make_tensor_value_info("Y", elem_type, ["n", 3])],
        )
        runner = raystore.onnx.save_model(name, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
        return runner.to_runner().init_local()

    small = identity(TensorProto.INT8, "int8s")
    np.testing.assert_array_equal(small.run(np.array([[-1, 2, 127]])), [[-1, 2, 127]])  # int64 that fits
    with pytest.raises(BadInput, match=r"out of its range \[-128, 127\]"):
        small.run(np.array([[-1, 256, 300]]))  # numpy would wrap these to 0 and 44
    half = identity(TensorProto.FLOAT16, "halves")
    with pytest.raises(BadInput, match="out of its range"):
        half.run(np.array([[1.0, 1e6, 2.0]]))  # inf in float16
    floats = identity(TensorProto.FLOAT, "floats")
    np.testing.assert_array_equal(floats.run(np.array([[1, 2, 3]])), [[1.0, 2.0, 3.0]])  # JSON integers


def test_onnx_weights_kept_elsewhere_are_refused_wherever_they_hide(tmp_path, monkeypatch):
    from onnx import TensorProto, helper, numpy_helper

    import raystore._private.frameworks.onnx as onnx_adapter

    weights = numpy_helper.from_array(np.ones((3, 400), np.float32), "W")  # over onnx's 1 KiB for a file of its own
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["X", "W"], ["Y"])],
        "mm",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["n", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["n", 400])],
        [weights],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    # a proto over the external-data threshold is written with its weights beside it, and the
    # caller's proto stays whole: a second save of it is as good as the first
    monkeypatch.setattr(onnx_adapter, "_EXTERNAL_ABOVE", 10)
    raystore.onnx.save_model("big", proto)
    saved = raystore.onnx.save_model("big", proto)
    assert len(proto.graph.initializer[0].raw_data) == 4800 and "model.onnx.data" in {e.path for e in saved.manifest}
    out = raystore.onnx.load_model(saved.tag).run(None, {"X": np.ones((1, 3), np.float32)})[0]
    np.testing.assert_array_equal(out, np.full((1, 400), 3.0))

    # a sparse initializer whose data sits outside the folder
    sparse = helper.make_sparse_tensor(
        numpy_helper.from_array(np.ones(2, np.float32), "S_values"),
        numpy_helper.from_array(np.array([0, 4], np.int64), "S_indices"),
        [3, 3],
    )
    sparse.values.data_location = TensorProto.EXTERNAL
    sparse.values.ClearField("raw_data")
    entry = sparse.values.external_data.add()
    entry.key, entry.value = "location", "../../secret.bin"
    hostile = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["S"], ["Y"])],
            "sparse",
            [],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [3, 3])],
            sparse_initializer=[sparse],
        )
    )
    (tmp_path / "hostile.onnx").write_bytes(hostile.SerializeToString())
    with pytest.raises(InvalidArgument, match="outside the graph's folder"):
        raystore.onnx.save_model("hostile", tmp_path / "hostile.onnx")
    with pytest.raises(InvalidArgument, match="outside the graph's folder"):
        raystore.onnx.save_model("hostile", hostile)
    assert [m.tag.name for m in raystore.models.list()] == ["big", "big"]
