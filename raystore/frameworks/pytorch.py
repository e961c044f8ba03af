"""PyTorch `nn.Module`s, whole: saved with `torch.save` through cloudpickle, so that classes defined
in the user's script load in another process, and loaded with `weights_only=False` (needed since
torch 2.6, whose default refuses whole modules). Loading runs code from the store: trust your store.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cloudpickle

from raystore.exceptions import InvalidArgument, MissingDependency
from raystore.frameworks.base import Framework
from raystore.store import Model

MODEL_FILE = "saved_model.pt"


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

    def load(self, model: Model, device_id: Any = "cpu") -> Any:
        torch = self.import_or_explain("torch", "pytorch")
        device = torch_device(torch, device_id)
        with open(model.path_of(MODEL_FILE), "rb") as f:
            return torch.load(f, map_location=device, weights_only=False)


FRAMEWORK = PyTorch()
save_model = FRAMEWORK.save_model
load_model = FRAMEWORK.load_model
get = FRAMEWORK.get
