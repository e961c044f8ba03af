"""raystore: a versioned model store and an adaptively batching model server on Ray Serve.

Importing raystore never starts Ray or imports a machine-learning framework; framework modules
(`raystore.sklearn`, `raystore.pytorch`, ...) load on first attribute access.
"""

from __future__ import annotations

import importlib
from typing import Any

from raystore import exceptions, models
from raystore.store import Model, ModelInfo, ModelSignature
from raystore.tag import Tag

__version__ = "0.1.0"

_LAZY_MODULES = {"picklable_model", "sklearn", "pytorch", "torchscript", "config", "io"}

__all__ = [
    "Model", "ModelInfo", "ModelSignature", "Runnable", "Runner", "Service", "ServiceUnavailable", "Tag",
    "__version__", "batch", "exceptions", "models", *sorted(_LAZY_MODULES),
]


_LAZY_ATTRIBUTES = {
    "Runner": "raystore.runner.runner",
    "Runnable": "raystore.runner.runnable",
    "batch": "raystore.batching",
    "ServiceUnavailable": "raystore.batching",
    "Service": "raystore.service.service",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"raystore.{name}")
    if name in _LAZY_ATTRIBUTES:
        return getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
    raise AttributeError(f"module 'raystore' has no attribute {name!r}")
