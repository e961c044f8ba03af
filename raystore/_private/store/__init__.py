"""The model store: versions as folders of files on any fsspec filesystem. Never imports Ray.

Knows nothing of frameworks or runners: `StoredModel` is its record of one version, which the
layers above wrap (`raystore.Model` adds `to_runner`).
"""

from raystore._private.store.info import ModelInfo, ModelSignature
from raystore._private.store.model_store import ModelStore, Outcome
from raystore._private.store.stored_model import StoredModel
from raystore.config import settings
from raystore.exceptions import InvalidArgument

__all__ = ["ModelInfo", "ModelSignature", "ModelStore", "Outcome", "StoredModel", "default_store", "remote_store"]


def default_store() -> ModelStore:
    """The store at the configured root (`RAYSTORE_HOME`, default `~/raystore`), read afresh each call."""
    return ModelStore(settings().home)


def remote_store(url: str | None = None) -> ModelStore:
    """The remote store push/pull talk to: `url`, else `RAYSTORE_REMOTE` or `remote:` in the config file."""
    url = url or settings().remote
    if not url:
        raise InvalidArgument(
            "no remote configured: set RAYSTORE_REMOTE=s3://bucket/prefix (or 'remote:' in ~/.raystore/config.yaml)"
        )
    return ModelStore(url)
