"""Train and save the tiny character-level language model the streaming example serves: a bigram
table (how often each character follows each other one) counted from a few sentences written
here, so nothing is downloaded.

    python examples/streaming/train.py
"""

import itertools

import numpy as np

import raystore

TEXT = """
the model store keeps every version of every model, with its labels and its metadata.
a runner serves a model on the cluster, and batches the requests that arrive together.
tokens stream to the client one at a time, as soon as the model has made them.
requests join the running batch between two steps, and leave it once they are done.
the quick brown fox jumps over the lazy dog, and the dog does not mind at all.
"""


def bigram_model(text: str) -> dict:
    """The vocabulary and, for each character, the log-probabilities of the next one (lightly
    smoothed, so that every character may follow every other)."""
    text = " ".join(text.split())
    vocab = "".join(sorted(set(text)))
    index = {char: i for i, char in enumerate(vocab)}
    counts = np.full((len(vocab), len(vocab)), 0.02)
    for current, following in itertools.pairwise(text):
        counts[index[current], index[following]] += 1
    log_probs = np.log(counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)
    return {"vocab": vocab, "log_probs": log_probs}


def main() -> None:
    model = raystore.picklable_model.save_model(
        "char_bigram", bigram_model(TEXT), labels={"example": "streaming"}, metadata={"corpus_chars": len(TEXT)}
    )
    print(f"Saved {model}")


if __name__ == "__main__":
    main()
