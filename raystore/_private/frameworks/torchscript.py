"""TorchScript modules (`torch.jit.script` / `torch.jit.trace`): saved with `torch.jit.save`, no pickle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from raystore._private.frameworks.pytorch import MODEL_FILE, PyTorch, torch_device
from raystore._private.store import StoredModel
from raystore.exceptions import InvalidArgument


class TorchScript(PyTorch):
    name = "torchscript"
    module = "raystore.torchscript"
    packages = ("torch",)

    def check_model(self, model: object) -> None:
        torch = self.import_or_explain("torch", "pytorch")
        if not isinstance(model, torch.jit.ScriptModule):
            raise InvalidArgument(
                f"{self.module}.save_model expects a torch.jit.ScriptModule (from torch.jit.script or "
                f"torch.jit.trace), got {type(model).__name__}; use raystore.pytorch for plain modules"
            )

    def save_files(self, model: object, path: Path) -> dict[str, Any]:
        torch = self.import_or_explain("torch", "pytorch")
        torch.jit.save(model, str(path / MODEL_FILE))
        return {}

    def load(self, model: StoredModel, device_id: Any = "cpu") -> Any:
        torch = self.import_or_explain("torch", "pytorch")
        return torch.jit.load(str(model.path_of(MODEL_FILE)), map_location=torch_device(torch, device_id))


FRAMEWORK = TorchScript()
