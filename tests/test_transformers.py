"""Hugging Face Transformers: a tiny BERT built here from a config, with a tokenizer written from a
small vocabulary file (nothing downloaded), saved as a pipeline and as a model with its tokenizer,
loaded offline, and run by batching runners."""

import asyncio

import numpy as np
import pytest

import raystore
from raystore.exceptions import BadInput, InvalidArgument

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "good", "bad", "great", "awful"]
TEXTS = ["the movie was good", "awful", "the movie was bad", "great great movie", "bad", "the good movie"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(WORDS) + "\n")
    tokenizer = transformers.BertTokenizer(vocab_file=str(vocab))
    config = transformers.BertConfig(
        vocab_size=len(WORDS),
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=2,
        id2label={0: "NEG", 1: "POS"},
        label2id={"NEG": 0, "POS": 1},
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval(), tokenizer


def test_a_pipeline_saves_as_safetensors_and_loads_offline(tiny_bert, monkeypatch):
    model, tokenizer = tiny_bert
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    saved = raystore.transformers.save_model("sentiment", pipe, labels={"lang": "en"})
    files = {entry.path for entry in saved.manifest}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt")) for f in files)
    assert saved.info.options["task"] == "text-classification" and set(saved.info.signatures) == {"__call__"}
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # and no network: loading must not need one
    loaded = raystore.transformers.load_model("sentiment")
    assert isinstance(loaded, transformers.Pipeline)
    expected = pipe(TEXTS)
    for got, want in zip(loaded(TEXTS), expected, strict=True):
        assert got["label"] == want["label"] and got["score"] == pytest.approx(want["score"], abs=1e-6)
    assert (
        raystore.transformers.load_tokenizer("sentiment")("good movie")["input_ids"]
        == tokenizer("good movie")["input_ids"]
    )

    runner = saved.to_runner()
    runner.init_local()

    async def callers():
        return await asyncio.gather(*(runner.async_run([text]) for text in TEXTS))

    answers = asyncio.run(callers())
    assert [a[0]["label"] for a in answers] == [e["label"] for e in expected]
    assert [a[0]["score"] for a in answers] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    assert runner.__call__.stats.batches < len(TEXTS)  # callers shared batches


def test_a_model_with_its_tokenizer_runs_on_arrays(tiny_bert):
    model, tokenizer = tiny_bert
    saved = raystore.transformers.save_model("bert", model, tokenizer=tokenizer)
    assert saved.info.options["parts"] == {"tokenizer": "BertTokenizer"}
    loaded = raystore.transformers.load_model("bert")
    assert type(loaded) is transformers.BertForSequenceClassification
    encoded = tokenizer(TEXTS[:2], padding=True, return_tensors="np")
    with torch.inference_mode():
        want = model(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits.numpy()
        np.testing.assert_allclose(
            loaded(**{k: torch.from_numpy(v) for k, v in encoded.items()}).logits, want, atol=1e-6
        )

    runner = saved.to_runner()
    runner.init_local()
    out = runner.run(dict(encoded))
    assert set(out) == {"logits"} and out["logits"].dtype == np.float32
    np.testing.assert_allclose(out["logits"], want, atol=1e-5)
    np.testing.assert_allclose(runner.run(**encoded)["logits"], want, atol=1e-5)
    with pytest.raises(BadInput, match="refused its inputs"):
        runner.run(input_ids=np.array([[2, 5, 99, 3]]), wrong_name=np.ones((1, 4)))
    with pytest.raises(InvalidArgument, match="saved without a processor"):
        raystore.transformers.load_processor("bert")


def test_other_objects_are_refused(tiny_bert):
    with pytest.raises(InvalidArgument, match="expects a transformers.Pipeline or PreTrainedModel"):
        raystore.transformers.save_model("x", object())
    model, tokenizer = tiny_bert
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    with pytest.raises(InvalidArgument, match="carries its own tokenizer"):
        raystore.transformers.save_model("x", pipe, tokenizer=tokenizer)
    assert raystore.models.list() == []


def test_a_generative_model_has_generate():
    config = transformers.GPT2Config(vocab_size=32, n_positions=32, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(config).eval()
    saved = raystore.transformers.save_model("tiny_gpt", model)
    assert saved.info.signatures["generate"].batchable is False
    runner = saved.to_runner()
    runner.init_local()
    prompt = np.array([[1, 2, 3]])
    out = runner.generate.run(input_ids=prompt, max_new_tokens=4, do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        want = model.generate(torch.from_numpy(prompt), max_new_tokens=4, do_sample=False, pad_token_id=0).numpy()
    assert isinstance(out, np.ndarray) and out.shape == (1, 7)
    np.testing.assert_array_equal(out, want)
    logits = runner.run(input_ids=prompt)["logits"]  # __call__: the cache stays behind, the logits come back
    assert logits.shape == (1, 3, 32)


@pytest.mark.s3
def test_export_import_and_push_pull_carry_a_pipeline(tiny_bert, tmp_path, s3_bucket):
    model, tokenizer = tiny_bert
    pipe = transformers.pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
    saved = raystore.transformers.save_model("sentiment", pipe)
    want = [r["label"] for r in pipe(TEXTS)]
    archive = raystore.models.export_model(saved.tag, str(tmp_path), quiet=True)
    raystore.models.push(saved.tag, remote=s3_bucket, quiet=True)
    raystore.models.delete(saved.tag)
    raystore.models.import_model(archive, quiet=True)
    assert [r["label"] for r in raystore.transformers.load_model(saved.tag)(TEXTS)] == want
    raystore.models.delete(saved.tag)
    raystore.models.pull(saved.tag, remote=s3_bucket, quiet=True)
    assert [r["label"] for r in raystore.transformers.load_model(saved.tag)(TEXTS)] == want


def test_a_pipelines_call_settings_come_back(tiny_bert):
    model, tokenizer = tiny_bert
    pipe = transformers.pipeline(
        "text-classification", model=model, tokenizer=tokenizer, device="cpu", top_k=None, function_to_apply="none"
    )
    saved = raystore.transformers.save_model("raw_scores", pipe)
    assert saved.info.options["call_settings"] == {"top_k": None, "function_to_apply": "none"}
    want = pipe(TEXTS[:2])
    got = raystore.transformers.load_model("raw_scores")(TEXTS[:2])
    assert [[r["label"] for r in g] for g in got] == [[r["label"] for r in w] for w in want]  # every label, raw
    np.testing.assert_allclose(
        [[r["score"] for r in g] for g in got], [[r["score"] for r in w] for w in want], atol=1e-6
    )
    with pytest.raises(InvalidArgument, match="tokenizer must be a transformers tokenizer object, got str"):
        raystore.transformers.save_model("bert", model, tokenizer="bert-base-uncased")
