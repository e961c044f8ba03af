"""scikit-learn estimators and pipelines, saved with cloudpickle (custom classes from scripts included)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raystore._private.frameworks.picklable_model import PicklableModel
from raystore.exceptions import InvalidArgument


class Sklearn(PicklableModel):
    name = "sklearn"
    module = "raystore.sklearn"
    packages = ("scikit-learn", "cloudpickle")
    default_signatures = {"predict": {"batchable": False}}

    def check_model(self, model: object) -> None:
        base = self.import_or_explain("sklearn.base", "sklearn")
        if not isinstance(model, base.BaseEstimator):
            raise InvalidArgument(
                f"raystore.sklearn.save_model expects a scikit-learn estimator, got {type(model).__name__}; "
                "use raystore.picklable_model for other objects"
            )

    def save_files(self, model: object, path: Path) -> dict[str, Any]:
        options = super().save_files(model, path)
        features = getattr(model, "n_features_in_", None)
        if isinstance(features, int):  # what the Open Inference Protocol's metadata tells clients
            options["n_features_in"] = features
        return options


FRAMEWORK = Sklearn()
