"""Public `raystore.torchscript` API; the adapter lives in `raystore.frameworks.torchscript`."""

from raystore.frameworks.torchscript import get, load_model, save_model

__all__ = ["get", "load_model", "save_model"]
