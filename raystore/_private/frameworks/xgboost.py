"""XGBoost boosters and scikit-learn wrappers (`XGBClassifier`, `XGBRegressor`, ...), saved as
XGBoost's own UBJSON model file: no pickle. A wrapper's file also holds its scikit-learn params;
the wrapper class is recorded by name and must be one of XGBoost's own."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from raystore._private.frameworks.base import Framework, check_feature_rows, plain_params
from raystore._private.replica import assigned_gpu_ids
from raystore._private.store import StoredModel
from raystore.exceptions import InvalidArgument, StoreError

MODEL_FILE = "model.ubj"
logger = logging.getLogger("raystore.xgboost")


class XGBoost(Framework):
    name = "xgboost"
    module = "raystore.xgboost"
    packages = ("xgboost",)
    # rows are independent: batching them along dim 0 never changes an answer
    default_signatures = {"predict": {"batchable": True}, "predict_proba": {"batchable": True}}
    gpu_capable = True

    def _xgb(self) -> Any:
        return self.import_or_explain("xgboost", "xgboost")

    def check_model(self, model: object) -> None:
        xgb = self._xgb()
        if not self.check_booster_or_wrapper(
            model, xgb, xgb.Booster, xgb.XGBModel, "XGBClassifier", "model.get_booster()"
        ):
            return
        try:
            model.get_booster()
        except Exception:  # sklearn's NotFittedError
            raise InvalidArgument(f"this {type(model).__name__} is not fitted yet: call fit() before saving") from None

    def save_files(self, model: object, path: Path) -> dict[str, Any]:
        xgb = self._xgb()
        model.save_model(str(path / MODEL_FILE))  # type: ignore[attr-defined]
        if isinstance(model, xgb.Booster):
            return {"kind": "booster"}
        # XGBoost's file keeps the booster, not the wrapper's params (`missing` changes predictions)
        params = plain_params(model.get_params(), "xgboost", refuse_functions=False)  # type: ignore[attr-defined]
        return {"kind": "sklearn", "class": type(model).__name__, "params": params}

    def load(self, model: StoredModel, device: str | None = None) -> Any:
        """The booster or wrapper as saved; `device` ("cpu", "cuda", "cuda:1") sets where it predicts."""
        xgb = self._xgb()
        options = model.info.options or {}
        kind = options.get("kind")
        if kind == "booster":
            loaded = xgb.Booster()
        elif kind == "sklearn":
            cls = getattr(xgb, str(options.get("class")), None)
            if not (isinstance(cls, type) and issubclass(cls, xgb.XGBModel)):
                raise StoreError(f"model {model.tag}: {options.get('class')!r} is not an XGBoost wrapper class here")
            params = options.get("params") or {}
            try:
                loaded = cls(**params)
            except TypeError as exc:
                raise StoreError(f"model {model.tag}: model.yaml's params do not fit {cls.__name__}: {exc}") from None
        else:
            raise StoreError(f"model {model.tag}: unknown xgboost model kind {kind!r} in model.yaml")
        loaded.load_model(str(model.path_of(MODEL_FILE)))
        if device is not None:
            _set_device(xgb, loaded, device)
        return loaded

    # ---- in a runner replica ------------------------------------------------------------------

    def load_for_runner(self, model: StoredModel) -> Any:
        return self.load(model, device=_runner_device(self._xgb()))

    def run_method(self, loaded: Any, method: str, args: tuple, kwargs: dict) -> Any:
        xgb = self._xgb()
        if args:
            expected = (
                loaded.num_features() if hasattr(loaded, "num_features") else getattr(loaded, "n_features_in_", None)
            )
            check_feature_rows(args[0], expected)
        if method == "predict" and isinstance(loaded, xgb.Booster) and args and not isinstance(args[0], xgb.DMatrix):
            args = (xgb.DMatrix(args[0]), *args[1:])
        return getattr(loaded, method)(*args, **kwargs)


def _set_device(xgb: Any, loaded: Any, device: str) -> None:
    if isinstance(loaded, xgb.Booster):
        loaded.set_param({"device": device})
    else:
        loaded.set_params(device=device)


def _runner_device(xgb: Any) -> str:
    """The replica's GPU when Ray assigned one and this XGBoost was built with CUDA, else the CPU."""
    if not assigned_gpu_ids():
        return "cpu"
    if not xgb.build_info().get("USE_CUDA"):
        logger.warning(
            "a GPU is assigned (CUDA_VISIBLE_DEVICES=%s) but this xgboost has no CUDA support; predicting on CPU",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        return "cpu"
    return "cuda"  # Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPU


FRAMEWORK = XGBoost()
