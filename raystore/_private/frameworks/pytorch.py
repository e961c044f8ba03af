"""PyTorch `nn.Module`s, whole: saved with `torch.save` through cloudpickle, so that classes defined
in the user's script load in another process, and loaded with `weights_only=False` (needed since
torch 2.6, whose default refuses whole modules). Loading runs code from the store: trust your store.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import cloudpickle

from raystore._private.frameworks.base import Framework
from raystore._private.replica import assigned_gpu_ids
from raystore._private.store import StoredModel
from raystore.exceptions import InvalidArgument, MissingDependency

MODEL_FILE = "saved_model.pt"
logger = logging.getLogger("raystore.pytorch")


def torch_device(torch: Any, device_id: Any) -> Any:
    """A `torch.device` for "cpu", "cuda", "cuda:N" or a device, checked to be usable here."""
    try:
        device = torch.device(device_id)
    except (RuntimeError, TypeError) as exc:
        raise InvalidArgument(f"device_id {device_id!r} is not a torch device ('cpu', 'cuda:0'): {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise MissingDependency(f"device_id {device_id!r} asks for CUDA, but no CUDA device is usable here")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise InvalidArgument(
                f"device_id {device_id!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
    return device


class PyTorch(Framework):
    name = "pytorch"
    module = "raystore.pytorch"
    packages = ("torch", "cloudpickle")
    default_signatures = {"__call__": {"batchable": False}}
    gpu_capable = True

    def check_model(self, model: object) -> None:
        torch = self.import_or_explain("torch", "pytorch")
        if not isinstance(model, torch.nn.Module):
            raise InvalidArgument(f"{self.module}.save_model expects a torch.nn.Module, got {type(model).__name__}")
        if isinstance(model, torch.jit.ScriptModule):
            raise InvalidArgument("this is a TorchScript module: save it with raystore.torchscript.save_model")

    def save_files(self, model: object, path: Path) -> dict[str, Any]:
        torch = self.import_or_explain("torch", "pytorch")
        with open(path / MODEL_FILE, "wb") as f:
            torch.save(model, f, pickle_module=cloudpickle)
        return {}

    def load(self, model: StoredModel, device_id: Any = "cpu") -> Any:
        torch = self.import_or_explain("torch", "pytorch")
        device = torch_device(torch, device_id)
        with open(model.path_of(MODEL_FILE), "rb") as f:
            return torch.load(f, map_location=device, weights_only=False)

    # ---- in a runner replica ------------------------------------------------------------------

    def load_for_runner(self, model: StoredModel) -> Any:
        torch = self.import_or_explain("torch", "pytorch")
        device = runner_device(torch)
        loaded = self.load(model, device_id=device)
        if hasattr(loaded, "eval"):
            loaded.eval()
        return _Placed(loaded, device)

    def run_method(self, loaded: Any, method: str, args: tuple, kwargs: dict) -> Any:
        torch = self.import_or_explain("torch", "pytorch")
        device = loaded.device
        args = _to_device(torch, args, device)
        kwargs = _to_device(torch, kwargs, device)
        with torch.inference_mode():
            out = getattr(loaded.module, method)(*args, **kwargs)
        return _to_device(torch, out, torch.device("cpu"))


class _Placed:
    """A loaded module and the device it lives on."""

    def __init__(self, module: Any, device: Any):
        self.module, self.device = module, device


def runner_device(torch: Any) -> Any:
    """The GPU Ray assigned to this replica, or the CPU; a GPU that CUDA cannot use falls back to
    the CPU with a warning instead of failing the replica."""
    if not assigned_gpu_ids():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        logger.warning(
            "a GPU is assigned (CUDA_VISIBLE_DEVICES=%s) but CUDA is not usable; running on CPU",
            os.environ.get("CUDA_VISIBLE_DEVICES"),
        )
        return torch.device("cpu")
    return torch.device("cuda", 0)  # Ray narrows CUDA_VISIBLE_DEVICES to the assigned GPU(s)


def _to_device(torch: Any, value: Any, device: Any) -> Any:
    """Tensors (and numpy arrays, as tensors) moved to `device`, inside tuples, lists and dicts too."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if type(value).__module__ == "numpy" and hasattr(value, "shape"):
        return torch.from_numpy(value).to(device)
    if isinstance(value, tuple):
        return (
            type(value)(*(_to_device(torch, v, device) for v in value))
            if hasattr(value, "_fields")
            else tuple(_to_device(torch, v, device) for v in value)
        )
    if isinstance(value, list):
        return [_to_device(torch, v, device) for v in value]
    if isinstance(value, dict):
        return {k: _to_device(torch, v, device) for k, v in value.items()}
    return value


FRAMEWORK = PyTorch()
