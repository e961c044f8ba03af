"""Public `raystore.pytorch` API; the adapter lives in `raystore.frameworks.pytorch`."""

from raystore.frameworks.pytorch import get, load_model, save_model

__all__ = ["get", "load_model", "save_model"]
