"""Token streaming with continuous batching: a tiny character-level language model whose
characters stream to each client as Server-Sent Events (or JSON lines) while requests join and
leave one running batch between its steps.

    python examples/streaming/train.py
    raystore serve service:svc --working-dir examples/streaming
    curl -N -H 'Content-Type: application/json' -d '{"prompt": "the ", "max_tokens": 40}' \
        http://127.0.0.1:3000/generate
"""

import numpy as np
import pydantic

import raystore
from raystore.io import JSON, Text


class CharLM(raystore.Runnable):
    """Samples one character per step for every stream in the batch: one matrix product for the
    whole batch (the cost a real model pays per step), then a draw per row from its own seeded
    generator, so a request's text depends only on the request."""

    def __init__(self, model: raystore.Model):
        table = raystore.picklable_model.load_model(model)
        self.vocab = table["vocab"]
        self.index = {char: i for i, char in enumerate(self.vocab)}
        self.log_probs = table["log_probs"]  # (vocab, vocab): next-character log-probabilities

    @raystore.Runnable.method(batchable=True, continuous=True)
    async def generate(self, requests: list[dict]):
        rows = [self.start(r) for r in requests]
        while rows:
            update = yield self.step(rows)  # one character per row (StopIteration: that row is done)
            rows = update.keep(rows)
            if update.joined:  # requests that arrived during the step join the batch here
                rows += [self.start(r) for r in update.joined["requests"]]

    def start(self, request: dict) -> dict:
        last = self.index.get(request["prompt"][-1], self.index[" "])
        rng = np.random.default_rng(request["seed"])
        return {"last": last, "left": request["max_tokens"], "rng": rng, "temperature": request["temperature"]}

    def step(self, rows: list[dict]) -> list:
        onehot = np.zeros((len(rows), len(self.vocab)), dtype=np.float32)
        onehot[np.arange(len(rows)), [row["last"] for row in rows]] = 1.0
        logits = onehot @ self.log_probs  # (rows, vocab)
        out = []
        for row, row_logits in zip(rows, logits):
            if row["left"] == 0:
                out.append(StopIteration)
                continue
            p = np.exp((row_logits - row_logits.max()) / row["temperature"])
            row["last"] = int(row["rng"].choice(len(p), p=p / p.sum()))
            row["left"] -= 1
            out.append(self.vocab[row["last"]])
        return out


model = raystore.models.get("char_bigram:latest")
lm = raystore.Runner(
    CharLM,
    name="char_lm",
    runnable_init_params={"model": model},
    models=[model],
    max_batch_size=64,
    resources={"num_cpus": 0.25},
)
svc = raystore.Service("char_lm_streaming", runners=[lm])


class Prompt(pydantic.BaseModel):
    prompt: str = pydantic.Field(min_length=1, max_length=1000, description="the text to continue")
    max_tokens: int = pydantic.Field(40, ge=1, le=1000, description="how many characters to generate")
    temperature: float = pydantic.Field(0.8, gt=0, le=5)
    seed: int = pydantic.Field(0, ge=0, description="the same seed and prompt give the same text")


@svc.api(input=JSON(Prompt), output=Text(stream=True))
async def generate(prompt: Prompt):
    """The continuation, streamed as Server-Sent Events: one character per event."""
    async for piece in lm.generate.async_stream([prompt.model_dump()]):
        yield piece[0]


@svc.api(input=JSON(Prompt), output=JSON(stream="jsonl"))
async def generate_jsonl(prompt: Prompt):
    """The continuation as JSON lines: {"token": ..., "index": ...} per character."""
    index = 0
    async for piece in lm.generate.async_stream([prompt.model_dump()]):
        yield {"token": piece[0], "index": index}
        index += 1


@svc.api(input=JSON(Prompt), output=JSON())
async def complete(prompt: Prompt) -> dict:
    """The whole continuation at once (the same stream, gathered)."""
    text = "".join([piece[0] async for piece in lm.generate.async_stream([prompt.model_dump()])])
    return {"prompt": prompt.prompt, "completion": text}
