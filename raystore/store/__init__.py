"""The model store: versions as folders of files on any fsspec filesystem. Never imports Ray."""

from raystore.config import settings
from raystore.store.info import ModelInfo, ModelSignature
from raystore.store.model import Model
from raystore.store.model_store import ModelStore

__all__ = ["Model", "ModelInfo", "ModelSignature", "ModelStore", "default_store"]


def default_store() -> ModelStore:
    """The store at the configured root (`RAYSTORE_HOME`, default `~/raystore`), read afresh each call."""
    return ModelStore(settings().home)
