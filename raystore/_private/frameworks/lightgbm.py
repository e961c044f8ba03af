"""LightGBM boosters and scikit-learn wrappers (`LGBMClassifier`, `LGBMRegressor`, `LGBMRanker`),
saved as LightGBM's own text model file: no pickle. A wrapper is rebuilt around the loaded booster
from what model.yaml records (its class, params and, for a classifier, its classes). LightGBM
predicts on CPUs only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raystore._private.frameworks.base import Framework, check_feature_rows, plain_params, plain_value
from raystore._private.store import StoredModel
from raystore.exceptions import InvalidArgument, StoreError

MODEL_FILE = "model.txt"


class LightGBM(Framework):
    name = "lightgbm"
    module = "raystore.lightgbm"
    packages = ("lightgbm",)
    # rows are independent: batching them along dim 0 never changes an answer
    default_signatures = {"predict": {"batchable": True}, "predict_proba": {"batchable": True}}

    def _lgb(self) -> Any:
        return self.import_or_explain("lightgbm", "lightgbm")

    def check_model(self, model: object) -> None:
        lgb = self._lgb()
        if not self.check_booster_or_wrapper(
            model, lgb, lgb.Booster, lgb.LGBMModel, "LGBMClassifier", "model.booster_"
        ):
            return
        if not getattr(model, "fitted_", False):
            raise InvalidArgument(f"this {type(model).__name__} is not fitted yet: call fit() before saving")

    def save_files(self, model: Any, path: Path) -> dict[str, Any]:
        lgb = self._lgb()
        if isinstance(model, lgb.Booster):
            model.save_model(str(path / MODEL_FILE))
            return {"kind": "booster"}
        model.booster_.save_model(str(path / MODEL_FILE))
        options: dict[str, Any] = {
            "kind": "sklearn",
            "class": type(model).__name__,
            "params": plain_params(model.get_params(), "lightgbm", refuse_functions=True),
            "feature_names": bool(getattr(model, "_fitted_with_feature_names", False)),
        }
        if isinstance(model, lgb.LGBMClassifier):
            options["classes"] = [plain_value(c) for c in model.classes_]
        return options

    def load(self, model: StoredModel) -> Any:
        lgb = self._lgb()
        options = model.info.options or {}
        booster = lgb.Booster(model_file=str(model.path_of(MODEL_FILE)))
        kind = options.get("kind")
        if kind == "booster":
            return booster
        if kind != "sklearn":
            raise StoreError(f"model {model.tag}: unknown lightgbm model kind {kind!r} in model.yaml")
        cls = getattr(lgb, str(options.get("class")), None)
        if not (isinstance(cls, type) and issubclass(cls, lgb.LGBMModel)):
            raise StoreError(f"model {model.tag}: {options.get('class')!r} is not a LightGBM wrapper class here")
        try:
            return _rebuild_wrapper(cls, booster, options)
        except (TypeError, ValueError) as exc:  # params or classes in model.yaml that are not what a save writes
            raise StoreError(f"model {model.tag}: model.yaml does not describe a {cls.__name__}: {exc}") from None

    def run_method(self, loaded: Any, method: str, args: tuple, kwargs: dict) -> Any:
        if args:
            expected = (
                loaded.num_feature() if hasattr(loaded, "num_feature") else getattr(loaded, "n_features_in_", None)
            )
            check_feature_rows(args[0], expected)
        return getattr(loaded, method)(*args, **kwargs)


def _rebuild_wrapper(cls: type, booster: Any, options: dict[str, Any]) -> Any:
    """A fitted wrapper around `booster`: the state LightGBM's `fit` leaves that `predict` reads."""
    import numpy as np

    params = options.get("params") or {}
    if not isinstance(params, dict):
        raise TypeError(f"params is a {type(params).__name__}")
    wrapper = cls(**params)
    wrapper._Booster = booster
    wrapper._n_features = wrapper._n_features_in = booster.num_feature()
    wrapper._best_iteration = booster.best_iteration
    wrapper._objective = booster.params.get("objective", wrapper.objective)
    wrapper._fitted_with_feature_names = bool(options.get("feature_names"))
    if "classes" in options:
        from sklearn.preprocessing import LabelEncoder

        classes = np.asarray(options["classes"])
        wrapper._classes, wrapper._n_classes = classes, len(classes)
        wrapper._le = LabelEncoder().fit(classes)
    wrapper.fitted_ = True
    return wrapper


FRAMEWORK = LightGBM()
