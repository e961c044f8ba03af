"""Public `raystore.transformers`: Hugging Face pipelines, or models with their tokenizer or
processor (`save_model`, `load_model`, `get`, `load_tokenizer`, `load_processor`).

    raystore.transformers.save_model("sentiment", pipeline)
    raystore.transformers.save_model("bert", model, tokenizer=tokenizer)

The adapter lives in `raystore._private.frameworks.transformers`; models come back as `raystore.Model`.
"""

from typing import Any

from raystore._private.frameworks.transformers import FRAMEWORK
from raystore._private.runner.model import framework_functions
from raystore.tag import Tag

save_model, load_model, get = framework_functions(FRAMEWORK)


def load_tokenizer(tag: str | Tag) -> Any:
    """The tokenizer saved with a model (or inside a pipeline), loaded from the store only."""
    return FRAMEWORK.load_part(FRAMEWORK.get(tag), "tokenizer")


def load_processor(tag: str | Tag) -> Any:
    """The processor saved with a model (or inside a pipeline), loaded from the store only."""
    return FRAMEWORK.load_part(FRAMEWORK.get(tag), "processor")


__all__ = ["get", "load_model", "load_processor", "load_tokenizer", "save_model"]
