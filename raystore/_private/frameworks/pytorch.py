"""PyTorch `nn.Module`s, whole: saved with `torch.save` through cloudpickle, so that classes defined
in the user's script load in another process, and loaded with `weights_only=False` (needed since
torch 2.6, whose default refuses whole modules). Loading runs code from the store: trust your store.
"""

from __future__ import annotations

import logging
import os
import re
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
        return _Placed(loaded, device, _floating_dtype(loaded))

    def run_method(self, loaded: Any, method: str, args: tuple, kwargs: dict) -> Any:
        """Inputs become tensors on the model's device: numpy arrays and pandas objects too, and
        floating-point ones take the model's floating dtype (numpy's float64 into a float32
        model). Integer inputs stay integers (token ids, indices); a model that wanted floats then
        fails with an error naming the dtype it computes in."""
        torch = self.import_or_explain("torch", "pytorch")
        device, dtype = loaded.device, loaded.dtype
        args = _to_device(torch, args, device, dtype)
        kwargs = _to_device(torch, kwargs, device, dtype)
        try:
            with torch.inference_mode():
                out = getattr(loaded.module, method)(*args, **kwargs)
        except RuntimeError as exc:
            integers = _integer_dtypes(torch, (args, kwargs))
            if dtype is None or not integers or not _DTYPE_MISMATCH.search(str(exc)):
                raise
            raise InvalidArgument(
                f"{method}: the model computes in {_dtype_name(dtype)}, but got {', '.join(integers)} input, "
                f"which raystore passes on unchanged (as token ids are); send {_dtype_name(dtype)} "
                f"(e.g. x.astype('{_dtype_name(dtype)}')). The model said: {exc}"
            ) from None
        return _to_device(torch, out, torch.device("cpu"))


class _Placed:
    """A loaded module, the device it lives on, and the floating dtype it computes in."""

    def __init__(self, module: Any, device: Any, dtype: Any = None):
        self.module, self.device, self.dtype = module, device, dtype


_DTYPE_MISMATCH = re.compile(r"dtype|scalar type", re.IGNORECASE)  # torch's words for a dtype clash


def _floating_dtype(module: Any) -> Any:
    """The dtype of the module's first floating-point parameter (or buffer); None without one."""
    for tensors in ("parameters", "buffers"):
        try:
            for tensor in getattr(module, tensors)():
                if tensor.is_floating_point():
                    return tensor.dtype
        except (AttributeError, TypeError, RuntimeError):
            continue
    return None


def _dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _integer_dtypes(torch: Any, value: Any) -> list[str]:
    """The dtypes of the integer tensors in `value` (tuples, lists and dicts searched too)."""
    if isinstance(value, torch.Tensor):
        return [] if value.is_floating_point() or value.is_complex() else [_dtype_name(value.dtype)]
    if isinstance(value, (tuple, list)):
        return sorted({d for v in value for d in _integer_dtypes(torch, v)})
    if isinstance(value, dict):
        return _integer_dtypes(torch, list(value.values()))
    return []


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


def _to_device(torch: Any, value: Any, device: Any, dtype: Any = None) -> Any:
    """Tensors (and numpy arrays and pandas objects, as tensors) moved to `device`, inside tuples,
    lists and dicts too; floating-point ones cast to `dtype` when it is given."""
    if isinstance(value, torch.Tensor):
        if dtype is not None and value.is_floating_point() and value.dtype != dtype:
            return value.to(device=device, dtype=dtype)
        return value.to(device)
    module = type(value).__module__
    if module.startswith("pandas") and hasattr(value, "to_numpy"):
        value = _pandas_array(value)
        module = "numpy"
    if module == "numpy" and hasattr(value, "shape"):
        try:
            if value.flags.writeable:
                return _to_device(torch, torch.from_numpy(value), device, dtype)
            # Read-only memory (arrays off Ray's object store): torch warns about sharing it, and a
            # model writing into its input must not reach it. One copy, straight to the model's
            # device and dtype.
            cast = dtype if dtype is not None and value.dtype.kind == "f" else None
            return torch.tensor(value, dtype=cast, device=device)
        except TypeError:
            raise InvalidArgument(
                f"an array of dtype {value.dtype} cannot become a tensor; send numbers (bool, int, float)"
            ) from None
    if isinstance(value, tuple):
        return (
            type(value)(*(_to_device(torch, v, device, dtype) for v in value))
            if hasattr(value, "_fields")
            else tuple(_to_device(torch, v, device, dtype) for v in value)
        )
    if isinstance(value, list):
        return [_to_device(torch, v, device, dtype) for v in value]
    if isinstance(value, dict):
        return {k: _to_device(torch, v, device, dtype) for k, v in value.items()}
    return value


def _pandas_array(value: Any) -> Any:
    """A DataFrame's (or Series') values as one numeric numpy array, in column order."""
    array = value.to_numpy()
    if array.dtype == object:
        kinds = sorted({str(d) for d in (value.dtypes if hasattr(value, "columns") else [value.dtype])})
        raise InvalidArgument(
            f"a pandas {type(value).__name__} with column types {kinds} cannot become one tensor; "
            "send numeric columns only"
        )
    return array


FRAMEWORK = PyTorch()
