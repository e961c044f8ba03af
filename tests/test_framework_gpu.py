"""The GPU paths of XGBoost, ONNX and Transformers runners: a served runner with one GPU puts the
model on that GPU and sends outputs back as CPU arrays. Skipped without CUDA (marked `gpu`)."""

import json

import numpy as np
import pytest
from ray import serve
from runnables import Caller
from sklearn.datasets import load_iris

import raystore

pytestmark = [pytest.mark.gpu, pytest.mark.ray]
GPU = {"num_cpus": 0.05, "num_gpus": 1}


@pytest.fixture(scope="module")
def iris_xy():
    x, y = load_iris(return_X_y=True)
    return x.astype(np.float32), y


def test_xgboost_predicts_on_the_replicas_gpu(ray_session, iris_xy):
    xgb = pytest.importorskip("xgboost")
    if not xgb.build_info().get("USE_CUDA"):
        pytest.skip("this xgboost has no CUDA support")
    x, y = iris_xy
    booster = xgb.train({"objective": "multi:softprob", "num_class": 3}, xgb.DMatrix(x, label=y), 8)
    saved = raystore.xgboost.save_model(
        "gpu_trees", booster, signatures={"predict": {"batchable": True}, "save_config": {}}
    )
    runner = saved.to_runner(resources=GPU, colocate=True)
    handle = serve.run(Caller.bind(runner.bind()), name="xgb_cuda", route_prefix=None)
    try:
        out = handle.remote("predict", x[:5]).result()
        assert isinstance(out, np.ndarray)
        np.testing.assert_allclose(out, booster.predict(xgb.DMatrix(x[:5])), rtol=1e-5)
        config = json.loads(handle.remote("save_config").result())
        assert config["learner"]["generic_param"]["device"].startswith("cuda")
    finally:
        serve.delete("xgb_cuda")


def test_onnx_runs_with_the_cuda_provider(ray_session, iris_xy):
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider (install onnxruntime-gpu)")
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = iris_xy
    graph = to_onnx(LogisticRegression(max_iter=500).fit(x, y), x[:1], options={"zipmap": False})
    saved = raystore.onnx.save_model("gpu_graph", graph, signatures={"run": {"batchable": True}, "get_providers": {}})
    runner = saved.to_runner(resources=GPU, colocate=True)
    handle = serve.run(Caller.bind(runner.bind()), name="onnx_cuda", route_prefix=None)
    try:
        assert handle.remote("get_providers").result()[0] == "CUDAExecutionProvider"
        labels = handle.remote("run", x[:5]).result()["label"]
        cpu = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
        np.testing.assert_array_equal(labels, cpu.run(None, {"X": x[:5]})[0])
    finally:
        serve.delete("onnx_cuda")


def test_a_transformers_model_runs_on_the_replicas_gpu(ray_session, tmp_path):
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file=str(tmp_path / "vocab.txt"))
    config = transformers.BertConfig(
        vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config).eval()
    saved = raystore.transformers.save_model(
        "gpu_bert", model, tokenizer=tokenizer, signatures={"__call__": {}, "get_input_embeddings": {}}
    )
    runner = saved.to_runner(resources=GPU, colocate=True)
    handle = serve.run(Caller.bind(runner.bind()), name="bert_cuda", route_prefix=None)
    try:
        encoded = dict(tokenizer(["good movie", "bad"], padding=True, return_tensors="np"))
        out = handle.remote("__call__", encoded).result()
        assert isinstance(out["logits"], np.ndarray)  # back on the CPU
        with torch.inference_mode():
            want = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits.numpy()
        np.testing.assert_allclose(out["logits"], want, atol=1e-3)  # GPU kernels differ in the last bits
        # the model itself sits on the replica's GPU (its embedding layer comes back as it is there)
        assert handle.remote("get_input_embeddings").result().weight.is_cuda
    finally:
        serve.delete("bert_cuda")
