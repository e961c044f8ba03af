"""Framework adapters and the registry that finds one from the `module` a model.yaml records."""

from __future__ import annotations

import importlib

from raystore._private.frameworks.base import Framework
from raystore.exceptions import StoreError

_ADAPTERS = {
    "raystore.picklable_model": "raystore._private.frameworks.picklable_model",
    "raystore.sklearn": "raystore._private.frameworks.sklearn",
    "raystore.pytorch": "raystore._private.frameworks.pytorch",
    "raystore.torchscript": "raystore._private.frameworks.torchscript",
    "raystore.xgboost": "raystore._private.frameworks.xgboost",
    "raystore.lightgbm": "raystore._private.frameworks.lightgbm",
    "raystore.onnx": "raystore._private.frameworks.onnx",
    "raystore.transformers": "raystore._private.frameworks.transformers",
    "raystore.models": "raystore._private.frameworks.own_files",
}


def framework_for(module: str) -> Framework:
    """The adapter for a model saved by `module` (imported on first use)."""
    try:
        return importlib.import_module(_ADAPTERS[module]).FRAMEWORK
    except KeyError:
        raise StoreError(f"unknown framework module {module!r}; known: {sorted(_ADAPTERS)}") from None


__all__ = ["Framework", "framework_for"]
