"""Framework adapters and the registry that finds one from the `module` a model.yaml records."""

from __future__ import annotations

import importlib

from raystore.exceptions import StoreError
from raystore.frameworks.base import Framework

_ADAPTERS = {
    "raystore.picklable_model": "raystore.frameworks.picklable_model",
    "raystore.sklearn": "raystore.frameworks.sklearn",
    "raystore.pytorch": "raystore.frameworks.pytorch",
    "raystore.torchscript": "raystore.frameworks.torchscript",
}


def framework_for(module: str) -> Framework:
    """The adapter for a model saved by `module` (imported on first use)."""
    try:
        return importlib.import_module(_ADAPTERS[module]).FRAMEWORK
    except KeyError:
        raise StoreError(f"unknown framework module {module!r}; known: {sorted(_ADAPTERS)}") from None


__all__ = ["Framework", "framework_for"]
