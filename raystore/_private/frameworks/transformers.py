"""Hugging Face Transformers: a `Pipeline`, or a model with its tokenizer or processor, saved
with `save_pretrained` (weights as safetensors, no pickle) and loaded back offline, from the
store only (`local_files_only=True`): a tag never reaches for a hub.

A pipeline's `__call__` takes a list of inputs (strings for text tasks), one result per input, so
concurrent callers batch along their lists. A bare model's `__call__` takes numpy arrays
(`input_ids`, `attention_mask`, ... as keyword arguments or one dict) and returns its output
tensors as numpy arrays; a generative model also has `generate`."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from raystore._private.frameworks.base import Framework
from raystore._private.replica import assigned_gpu_ids
from raystore._private.store import StoredModel
from raystore.exceptions import BadInput, InvalidArgument, StoreError

logger = logging.getLogger("raystore.transformers")
# A pipeline's parts besides its model, as `Pipeline` names them, and the Auto class that loads each.
_PARTS = {
    "tokenizer": "AutoTokenizer",
    "feature_extractor": "AutoFeatureExtractor",
    "image_processor": "AutoImageProcessor",
    "processor": "AutoProcessor",
}


class Transformers(Framework):
    name = "transformers"
    module = "raystore.transformers"
    packages = ("transformers", "torch", "tokenizers", "safetensors")
    default_signatures = {"__call__": {"batchable": True}, "generate": {"batchable": False}}
    gpu_capable = True

    def _transformers(self) -> Any:
        return self.import_or_explain("transformers", "transformers")

    def check_model(self, model: object) -> None:
        transformers = self._transformers()
        if isinstance(model, transformers.Pipeline):
            cls = type(model.model)
        elif isinstance(model, transformers.PreTrainedModel):
            cls = type(model)
        else:
            raise InvalidArgument(
                f"{self.module}.save_model expects a transformers.Pipeline or PreTrainedModel, got {type(model).__name__}"
            )
        if getattr(transformers, cls.__name__, None) is not cls:
            raise InvalidArgument(
                f"{cls.__name__} is not one of transformers' own model classes, which is all raystore loads without "
                "running code from the store; save it with raystore.pytorch instead"
            )

    def signatures_for(self, model: object) -> dict[str, dict[str, Any]]:
        transformers = self._transformers()
        if isinstance(model, transformers.Pipeline):
            return {"__call__": {"batchable": True}}
        signatures = {"__call__": {"batchable": True}}
        if model.can_generate():  # type: ignore[attr-defined]
            signatures["generate"] = {"batchable": False}  # outputs' lengths depend on the batch's padding
        return signatures

    def save_files(
        self, model: Any, path: Path, *, tokenizer: Any = None, processor: Any = None, task: str | None = None
    ) -> dict[str, Any]:
        transformers = self._transformers()
        if isinstance(model, transformers.Pipeline):
            if tokenizer is not None or processor is not None:
                raise InvalidArgument("a pipeline carries its own tokenizer and processor; pass only the pipeline")
            parts = {part: type(getattr(model, part)).__name__ for part in _PARTS if getattr(model, part, None)}
            model.save_pretrained(str(path))
            return {
                "kind": "pipeline",
                "task": task or model.task,
                "class": type(model.model).__name__,
                "parts": parts,
                "call_settings": _call_settings(model),
            }
        model.save_pretrained(str(path))
        parts = {}
        for part, value in (("tokenizer", tokenizer), ("processor", processor)):
            if value is not None and not callable(getattr(value, "save_pretrained", None)):
                raise InvalidArgument(f"{part} must be a transformers {part} object, got {type(value).__name__}")
            if value is not None:
                value.save_pretrained(str(path))
                parts[part] = type(value).__name__
        return {"kind": "model", "class": type(model).__name__, "parts": parts, "task": task}

    # ---- loading ------------------------------------------------------------------------------

    def load(self, model: StoredModel, device: Any = None) -> Any:
        """The pipeline, or the model (its tokenizer: `load_part(tag, "tokenizer")`), from the
        store only; `device` as transformers takes it ("cpu", "cuda:0", 0)."""
        transformers = self._transformers()
        options = model.info.options or {}
        loaded = self._model(transformers, model, options)
        if options.get("kind") == "pipeline":
            parts = {part: self.load_part(model, part) for part in options.get("parts") or {}}
            settings = options.get("call_settings") or {}
            if not isinstance(settings, dict):
                raise StoreError(f"model {model.tag}: call_settings in model.yaml is not a mapping")
            return transformers.pipeline(
                options.get("task"), model=loaded, device=device if device is not None else "cpu", **parts, **settings
            )
        if device is not None:
            loaded = loaded.to(device)
        return loaded

    def _model(self, transformers: Any, model: StoredModel, options: dict[str, Any]) -> Any:
        if options.get("kind") not in ("pipeline", "model"):
            raise StoreError(f"model {model.tag}: unknown transformers model kind {options.get('kind')!r}")
        cls = getattr(transformers, str(options.get("class")), None)
        if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
            raise StoreError(f"model {model.tag}: {options.get('class')!r} is not a transformers model class here")
        loaded = cls.from_pretrained(str(model.local_path), local_files_only=True, trust_remote_code=False)
        return loaded.eval()

    def load_part(self, model: StoredModel, part: str) -> Any:
        """A model's saved tokenizer or processor (by its Auto class, from the store only)."""
        transformers = self._transformers()
        if part not in ((model.info.options or {}).get("parts") or {}):
            raise InvalidArgument(f"model {model.tag} was saved without a {part}")
        auto = getattr(transformers, _PARTS[part])
        return auto.from_pretrained(str(model.local_path), local_files_only=True, trust_remote_code=False)

    # ---- in a runner replica ------------------------------------------------------------------

    def load_for_runner(self, model: StoredModel) -> Any:
        torch = self.import_or_explain("torch", "transformers")
        device = "cpu"
        if assigned_gpu_ids():
            if torch.cuda.is_available():
                device = "cuda:0"  # Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPU
            else:
                logger.warning(
                    "a GPU is assigned (CUDA_VISIBLE_DEVICES=%s) but CUDA is not usable; running on CPU",
                    os.environ.get("CUDA_VISIBLE_DEVICES"),
                )
        return self.load(model, device=device)

    def run_method(self, loaded: Any, method: str, args: tuple, kwargs: dict) -> Any:
        transformers = self._transformers()
        if isinstance(loaded, transformers.Pipeline):
            if method == "__call__" and args and isinstance(args[0], (list, tuple)):
                args = (list(args[0]), *args[1:])
                # A pipeline runs a list one input at a time unless told a batch size: the whole
                # list (what the batch queue gathered) goes through the model at once.
                kwargs.setdefault("batch_size", max(1, len(args[0])))
            return getattr(loaded, method)(*args, **kwargs)
        torch = self.import_or_explain("torch", "transformers")
        if len(args) == 1 and not kwargs and isinstance(args[0], dict):
            args, kwargs = (), dict(args[0])
        tensors = {key: _tensor(torch, value, loaded.device, key) for key, value in kwargs.items()}
        positional = tuple(_tensor(torch, value, loaded.device, f"argument {i}") for i, value in enumerate(args))
        with torch.inference_mode():
            try:
                out = getattr(loaded, method)(*positional, **tensors)
            except (TypeError, ValueError, IndexError) as exc:
                raise BadInput(f"{type(loaded).__name__}.{method} refused its inputs: {exc}") from None
        return _to_numpy(torch, out)


def _call_settings(pipeline: Any) -> dict[str, Any]:
    """What the pipeline was built with that shapes its answers (`top_k`, `function_to_apply`, ...),
    as plain values for model.yaml; its own bookkeeping (names starting with _) is left out."""
    settings = {}
    for params in (pipeline._preprocess_params, pipeline._forward_params, pipeline._postprocess_params):
        for key, value in params.items():
            value = getattr(value, "value", value)  # enums by value
            if not key.startswith("_") and (value is None or isinstance(value, (str, int, float, bool))):
                settings[key] = value
    return settings


def _tensor(torch: Any, value: Any, device: Any, name: str) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if type(value).__module__ == "numpy" and hasattr(value, "shape"):
        return torch.from_numpy(value).to(device)
    if isinstance(value, (list, tuple)):
        try:
            return torch.tensor(value, device=device)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"{name} is not an array of numbers: {exc}") from None
    return value


def _to_numpy(torch: Any, value: Any) -> Any:
    """Tensors as numpy arrays on the CPU; a ModelOutput as a dict of its tensors (a cache or other
    objects, which cannot leave the replica as arrays, are left out)."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    if isinstance(value, dict):  # ModelOutput is an OrderedDict
        return {key: _to_numpy(torch, v) for key, v in value.items() if _is_arrays(torch, v)}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_numpy(torch, v) for v in value) if not hasattr(value, "_fields") else value
    return value


def _is_arrays(torch: Any, value: Any) -> bool:
    if isinstance(value, torch.Tensor):
        return True
    return isinstance(value, tuple) and all(isinstance(v, torch.Tensor) for v in value)


FRAMEWORK = Transformers()
