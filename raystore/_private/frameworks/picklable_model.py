"""Any Python object that cloudpickle can save (the fallback framework)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cloudpickle

from raystore._private.frameworks.base import Framework
from raystore._private.store import StoredModel

MODEL_FILE = "saved_model.pkl"


class PicklableModel(Framework):
    name = "picklable_model"
    module = "raystore.picklable_model"
    packages = ("cloudpickle",)
    default_signatures = {"__call__": {"batchable": False}}

    def save_files(self, model: object, path: Path) -> dict[str, Any]:
        with open(path / MODEL_FILE, "wb") as f:
            cloudpickle.dump(model, f)
        return {}

    def load(self, model: StoredModel, **kwargs: Any) -> Any:
        if kwargs:
            raise TypeError(f"{self.module}.load_model takes no options, got {sorted(kwargs)}")
        with open(model.path_of(MODEL_FILE), "rb") as f:
            return cloudpickle.load(f)


FRAMEWORK = PicklableModel()
