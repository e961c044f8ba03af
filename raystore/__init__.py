"""raystore: a versioned model store and an adaptively batching model server on Ray Serve.

The public surface is this module, the framework modules (`raystore.sklearn`, `raystore.pytorch`,
`raystore.torchscript`, `raystore.xgboost`, `raystore.lightgbm`, `raystore.onnx`,
`raystore.transformers`, `raystore.picklable_model`), `raystore.io`, `raystore.models`,
`raystore.exceptions`, `raystore.tag`, `raystore.config`, `raystore.serving` (what built Serve
configs name) and the `raystore` command. Everything under `raystore._private` is internal and
may change without notice.

Importing raystore never starts Ray or imports a machine-learning framework: every name below
loads on first access.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from raystore._private.version import __version__

if TYPE_CHECKING:
    from raystore import (
        config,
        exceptions,
        io,
        lightgbm,
        models,
        onnx,
        picklable_model,
        pytorch,
        sklearn,
        torchscript,
        transformers,
        xgboost,
    )
    from raystore._private.batching import BatchUpdate, batch, batch_request_contexts
    from raystore._private.runner.model import Model
    from raystore._private.runner.runnable import Runnable
    from raystore._private.runner.runner import Runner
    from raystore._private.service.service import Service
    from raystore._private.store import ModelInfo, ModelSignature
    from raystore.exceptions import ServiceUnavailable
    from raystore.tag import Tag

_LAZY_MODULES = {
    "config",
    "exceptions",
    "io",
    "lightgbm",
    "models",
    "onnx",
    "picklable_model",
    "pytorch",
    "sklearn",
    "torchscript",
    "transformers",
    "xgboost",
}

_LAZY_ATTRIBUTES = {
    "BatchUpdate": "raystore._private.batching",
    "Model": "raystore._private.runner.model",
    "ModelInfo": "raystore._private.store",
    "ModelSignature": "raystore._private.store",
    "Runnable": "raystore._private.runner.runnable",
    "Runner": "raystore._private.runner.runner",
    "Service": "raystore._private.service.service",
    "ServiceUnavailable": "raystore.exceptions",
    "Tag": "raystore.tag",
    "batch": "raystore._private.batching",
    "batch_request_contexts": "raystore._private.batching",
}

__all__ = ["__version__", *sorted(_LAZY_ATTRIBUTES), *sorted(_LAZY_MODULES)]


def __getattr__(name: str) -> Any:
    if name in _LAZY_MODULES:
        return importlib.import_module(f"raystore.{name}")
    if name in _LAZY_ATTRIBUTES:
        value = getattr(importlib.import_module(_LAZY_ATTRIBUTES[name]), name)
        globals()[name] = value  # found once: later lookups skip this function
        return value
    raise AttributeError(f"module 'raystore' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
